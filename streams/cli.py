"""`intentstream` console script: Faust's CLI (worker, tables, send, …) plus our commands.

`intentstream worker -l info` runs the scoring worker; `intentstream --help` lists the rest.
`train` is dispatched before Faust because it has its own argument parser and needs no broker.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["train"]:
        from training.train import main as train_main

        raise SystemExit(train_main(args[1:]))

    from streams.logs import configure_logging
    from streams.settings import get_settings

    configure_logging(get_settings().log_level)
    # Importing registers the agents and commands on the app.
    from streams import commands, worker  # noqa: F401
    from streams.app import app

    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
