"""Progress bars for long runs (training, replays, the bench), drawn only on a terminal.

Piped to a file or a CI log, tqdm's carriage-return frames pile up into one huge line; there
the bar is off and the command's own summary line is the record of the run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm


def on_a_terminal() -> bool:
    """True if stderr, where bars are drawn, is an interactive terminal."""
    return sys.stderr.isatty()


def progress_bar(*, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar on stderr, disabled unless `enabled` and stderr is a terminal."""
    return tqdm(disable=not (enabled and on_a_terminal()), **options)


def quiet_progress_unless_terminal() -> None:
    """Off a terminal, also quiet the bars of the libraries a command calls (tqdm, Hugging
    Face) and of the processes it starts, through their environment variables."""
    if not on_a_terminal():
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
