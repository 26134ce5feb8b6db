"""The demo model's arguments: valid for the train command, sized for a first `make demo`."""

from __future__ import annotations

from training.arguments import parse_args
from training.demo_model import DEMO_TRAIN_ARGS


def test_demo_args_parse_and_stay_small() -> None:
    data, model, run = parse_args([*DEMO_TRAIN_ARGS, "--repo", "somewhere"])
    assert model.tiny and not data.uci and not run.progress  # no UCI, no `\r` frames in logs
    # Cost ~ training windows x epochs + validation checks: 800 users x 3 epochs with one check
    # an epoch costs about what 2 epochs with two checks did (~2 minutes on 2 idle cores).
    assert data.users * run.epochs <= 2400 and run.evals_per_epoch == 1
    assert run.fusion == "stack"  # measured best on strength and churn (docs/model.md)
    assert run.runtime == "torch"  # no runtime check: torch was the fastest for the tiny config
    assert (data.heldout_windows_per_user or 0) > data.simulated_windows_per_user()  # stack rows
