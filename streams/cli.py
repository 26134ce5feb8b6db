"""`intentstream` console script: Faust's CLI (worker, tables, send, …) plus our commands.

`intentstream worker -l info` runs the scoring worker; `intentstream --help` lists the rest.
The commands in OWN_PARSERS have their own argument parsers and need no Faust app, so they are
dispatched first. `feedback ...` goes to the feedback sidecar's own Faust app.
"""

from __future__ import annotations

import importlib
import sys

# command -> "module:function(argv) -> exit status"
OWN_PARSERS = {
    "train": "training.train:main",
    "retrain": "training.retrain:main",
    "replay": "backtest.cli:replay_main",
    "backtest": "backtest.cli:backtest_main",
    "bench": "bench.cli:main",
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from streams.runtime.logs import configure_logging
    from streams.settings import get_settings

    configure_logging(get_settings().log_level)
    if args[:1] and args[0] in OWN_PARSERS:
        module, function = OWN_PARSERS[args[0]].split(":")
        raise SystemExit(getattr(importlib.import_module(module), function)(args[1:]))
    if args[:1] == ["feedback"]:
        # The feedback sidecar: a second Faust app with its own worker (docs/feedback.md).
        from streams.sidecar.app import main as feedback_main

        feedback_main(args[1:])
        return
    # Importing registers the agents and commands on the app.
    from streams.worker import agent, commands  # noqa: F401
    from streams.worker.app import app

    if args[:1] == ["worker"] and not any(a.startswith(("--with-web", "--web")) for a in args):
        # Faust's worker command starts its web server whatever the app says; ours is off by
        # default (settings), so two workers on one host don't fight over port 6066.
        args = [*args, "--without-web"]
    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
