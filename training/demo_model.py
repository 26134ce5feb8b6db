"""The demo model: what `make demo` and `intentstream replay` train when the model repository
has no built version yet, so a fresh clone scores within minutes. `intentstream train` builds
the full model (docs/model.md). Importing this module is cheap: torch loads only to train.
"""

from __future__ import annotations

import sys
from pathlib import Path

from inference import repository
from inference.repository import INTENT_BERT
from training.cli import main as train_main

# The tiny config trained for about a minute on simulated shoppers, with the stacked heads over
# the behaviour features fitted on a large validation split (held-out rows cost only
# prediction), served on torch (the tiny config's fastest runtime, so no runtime check); each
# choice and its measurements: docs/model.md, "The demo model". `--repo` is added per call.
DEMO_TRAIN_ARGS: tuple[str, ...] = ("--tiny", "--fusion", "stack", "--users", "800",
                                    "--epochs", "3",
                                    "--evals-per-epoch", "1", "--validation-share", "0.35",
                                    "--heldout-windows-per-user", "20", "--no-uci",
                                    "--runtime", "torch",
                                    "--progress", "false", "--out", "runs/demo-model")


class DemoModelError(RuntimeError):
    """Training the demo model failed (its own output says why)."""


def ensure_demo_model(repo: Path) -> bool:
    """Train the demo model into `repo` unless it holds an intent_bert version already.
    True if it trained one."""
    if repository.versions(Path(repo) / INTENT_BERT):
        return False
    print(f"no model version in {repo}: training the demo model first (~1-2 min on 2 cores; "
          "`intentstream train` builds the full one)", file=sys.stderr, flush=True)
    if train_main([*DEMO_TRAIN_ARGS, "--repo", str(repo)]) != 0:
        raise DemoModelError("training the demo model failed; see the output above")
    return True
