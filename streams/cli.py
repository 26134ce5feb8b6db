"""`intentstream`: one dispatcher for every command; `intentstream` alone lists them, grouped.

Each command's module is imported only when that command runs, so `intentstream --help` and
`intentstream COMMAND --help` need no broker, no Triton and no torch import they do not use.
Three kinds of command:

- our own argument parsers (train, retrain, replay, backtest, bench): `module:function(argv)`,
  returning the exit status;
- the feedback sidecar, a second Faust app with its own worker (docs/feedback.md);
- commands of the scoring worker's Faust app: `worker`, ours registered on it
  (create-topics, watch, health, user: streams/worker/commands.py) and Faust's own (agents, ...).

This is the one module of `streams/` that may import training/, backtest/ and bench/.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

FAUST = "faust"  # target: a command of the worker's Faust app
EXIT_USAGE = 2


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str  # the one line `intentstream --help` shows
    target: str  # "module:function(argv) -> exit status", or FAUST


# (group heading, its commands), in the order `intentstream --help` lists them.
GROUPS: tuple[tuple[str, tuple[Command, ...]], ...] = (
    ("run", (
        Command("worker", "score shop events: the Faust scoring worker (needs broker, Triton)",
                FAUST),
        Command("feedback", "the feedback sidecar: labels scored windows from later events",
                "streams.sidecar.app:main"),
    )),
    ("model", (
        Command("train", "fine-tune the model on simulated shoppers or your own history "
                "(--events, --from/--to), compare it with its peers, export it",
                "training.cli:main"),
        Command("retrain", "retrain on feedback examples; promote only if it beats the live "
                "model", "training.cli:retrain_main"),
    )),
    ("analyse", (
        Command("replay", "replay a file of events through the live scoring code; write a report",
                "backtest.cli:replay_main"),
        Command("backtest", "replay a time range of the events topic against a model version",
                "backtest.cli:backtest_main"),
        Command("bench", "measure throughput and latency on the embedded broker and Triton",
                "bench.cli:main"),
        Command("watch", "print intent scores as they arrive on the scores topic", FAUST),
    )),
    ("operate", (
        Command("create-topics", "create the source, output and DLQ topics (idempotent)", FAUST),
        Command("health", "exit 0 if the worker (or sidecar) on this host is healthy, 1 if not",
                FAUST),
        Command("user", "print what the workers hold about one user: latest scores, open "
                "session, profile (GET /users/{id})", FAUST),
    )),
    ("faust (Faust's own, on the worker app)", (
        Command("agents", "list agents", FAUST),
        Command("tables", "list available tables", FAUST),
        Command("send", "send a message to an agent or topic", FAUST),
        Command("reset", "delete local table state", FAUST),
        Command("clean-versions", "delete old version directories", FAUST),
        Command("model", "show model detail", FAUST),
        Command("models", "list all available models", FAUST),
        Command("livecheck", "manage LiveCheck instances", FAUST),
        Command("completion", "output shell completion to be evaluated by the shell", FAUST),
    )),
)
COMMANDS: dict[str, Command] = {c.name: c for _, commands in GROUPS for c in commands}
HELP_FLAGS = frozenset({"-h", "--help", "help"})


def usage() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = [
        "usage: intentstream COMMAND [ARGS]...",
        "",
        "Streaming purchase-intent and churn signals: Faust workers, Triton, a fine-tuned BERT.",
        "`intentstream COMMAND --help` shows a command's options; none needs a broker for that.",
    ]
    for heading, commands in GROUPS:
        lines += ["", f"{heading}:"]
        lines += [f"  {c.name:<{width}}{c.summary}" for c in commands]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in HELP_FLAGS:
        sys.stdout.write(usage())
        raise SystemExit(0)
    command = COMMANDS.get(args[0])
    if command is None and not args[0].startswith("-"):  # "-" : Faust's global options
        print(f"intentstream: no command {args[0]!r}; `intentstream --help` lists them",
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    own_parser = command is not None and command.target != FAUST
    if not (own_parser and {"-h", "--help"} & set(args)):
        configure_from_settings()  # the Faust apps read settings even to print their help
    if own_parser:
        module, function = command.target.split(":")
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as error:  # e.g. `train` in the serving image (no torch)
            print(f"intentstream {args[0]}: this install lacks {error.name!r}; the command "
                  "needs pip install 'intentstream[serve,embedded,train,report]'",
                  file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        raise SystemExit(getattr(loaded, function)(args[1:]))
    run_worker_app(args)


def configure_from_settings() -> None:
    """Logging at the configured level; a bad setting is one line and exit 2, not a traceback."""
    from pydantic import ValidationError

    from streams.runtime.logs import configure_logging
    from streams.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                             for e in error.errors())
        print(f"intentstream: bad setting (INTENTSTREAM_* environment or .env): {problems}",
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    configure_logging(settings.log_level)


def run_worker_app(args: list[str]) -> None:
    """A command of the scoring worker's Faust app (Faust parses the rest)."""
    # Importing registers the agents, the lookup endpoint and our commands on the app.
    from streams.worker import agent, commands, lookup  # noqa: F401
    from streams.worker.app import app

    if args[:1] == ["worker"] and not any(a.startswith(("--with-web", "--web")) for a in args):
        # Faust's worker command starts its web server whatever the app says; ours is off by
        # default (settings), so two workers on one host don't fight over port 6066.
        args = [*args, "--without-web"]
    sys.argv = [sys.argv[0], *args]
    app.main()


if __name__ == "__main__":
    main()
