"""Validation checks in the fine-tune loop: how many, where, and whether the start is one."""

from __future__ import annotations

import math
import random

import pytest
import torch

from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import load_tokenizer
from training.fit.loop import (
    FitConfig,
    Targets,
    check_steps,
    fit,
    multitask_loss,
    tokenize,
    total_steps,
)


def config(epochs: float, batch_size: int = 16, checks_per_epoch: int = 1, **kw) -> FitConfig:
    return FitConfig(epochs=epochs, max_steps=kw.pop("max_steps", None), batch_size=batch_size,
                     learning_rate=2e-3, warmup_ratio=0.1, weight_decay=0.0,
                     checks_per_epoch=checks_per_epoch, patience=kw.pop("patience", 3), seed=0,
                     progress=False, **kw)


@pytest.mark.parametrize("n_rows", [16, 71, 99, 100, 300, 1350, 4609])
@pytest.mark.parametrize("epochs", [0.5, 1.0, 1.8, 2.0, 3.0])
@pytest.mark.parametrize("per_epoch", [1, 2, 3])
def test_checks_are_evenly_spaced_and_the_last_is_the_final_step(
        n_rows: int, epochs: float, per_epoch: int) -> None:
    cfg = config(epochs, checks_per_epoch=per_epoch)
    checks, total = check_steps(n_rows, cfg), total_steps(n_rows, cfg)
    assert checks[-1] == total
    wanted = max(1, round(total / math.ceil(n_rows / 16) * per_epoch))
    assert len(checks) == min(wanted, total)
    gaps = [b - a for a, b in zip([0, *checks], checks, strict=False)]
    assert min(gaps) >= 1 and max(gaps) - min(gaps) <= 1  # no check just after another


def test_max_steps_sets_the_run_the_checks_are_spread_over() -> None:
    assert check_steps(4609, config(2.0, max_steps=5)) == [5]
    assert check_steps(4609, config(2.0, max_steps=40, checks_per_epoch=1)) == [40]


def test_the_default_run_checks_once_an_epoch_not_twice_at_the_end() -> None:
    # 4,609 training windows, 16 a step, 1.8 epochs: 521 steps, checked at 261 and 521 (the
    # old spacing, every 144 steps, checked at 576 and again at 578).
    assert check_steps(4609, config(1.8)) == [261, 521]


def tiny_task():
    rng = random.Random(0)
    words = {0: "cart", 1: "search", 2: "broken"}
    rows = [(k, f"view: item {rng.randint(1, 99)} | {words[k]} {rng.randint(1, 99)}")
            for k in (rng.randrange(3) for _ in range(120))]
    tokens = tokenize(load_tokenizer(), [t for _, t in rows], 32)
    k = torch.tensor([k for k, _ in rows])
    return tokens, Targets(k, k, (k == 2).float())


@pytest.mark.parametrize("initial_check", [True, False])
def test_the_starting_weights_are_validated_only_when_asked(initial_check: bool) -> None:
    tokens, targets = tiny_task()
    torch.manual_seed(0)
    model = IntentBert.tiny(len(load_tokenizer()))
    result = fit(model, tokens[:100], targets.rows(range(100)), tokens[100:],
                 targets.rows(range(100, 120)), config(2.0, initial_check=initial_check),
                 multitask_loss)
    steps = [h["step"] for h in result.history]
    assert steps == ([0, 7, 14] if initial_check else [7, 14])
    assert result.best_step in steps and result.best_val_loss == min(
        h["val_loss"] for h in result.history)


def test_a_fit_with_no_finite_validation_loss_is_an_error_not_nan_weights() -> None:
    tokens, targets = tiny_task()
    torch.manual_seed(0)
    model = IntentBert.tiny(len(load_tokenizer()))
    with pytest.raises(FloatingPointError, match="no finite validation loss"):
        fit(model, tokens[:100], targets.rows(range(100)), tokens[100:],
            targets.rows(range(100, 120)), config(1.0, initial_check=False),
            lambda logits, t: multitask_loss(logits, t) * float("nan"))
