"""Fine-tuning mechanics for IntentBert: token batches, the optimisation loop, prediction.

Batches are grouped by length (shuffled, then sorted within pools of a few batches) and padded
to their own longest text: on CPU, padding is most of the cost of short session texts.

A network with a feature tower (`model.n_features > 0`) also takes each row's FEATURES: pass
them row-aligned with the tokens (`features=`, [n, n_features]); a text-only network takes none.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from inference.model.intent_bert import HeadOutputs, IntentBert
from training.progress import progress_bar

POOL_BATCHES = 20  # batches per length-sorting pool


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[
    list[int]
]:
    """Token ids per text, truncated like the served tokenizer (left side, keeping the newest)."""
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def pad(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """One epoch of index batches: random, but each batch holds texts of similar length."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    pool = batch_size * POOL_BATCHES
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


@dataclass(frozen=True, slots=True)
class Targets:
    """Label indices per head, row-aligned with the token lists."""

    strength: torch.Tensor  # long [n]
    intent_type: torch.Tensor  # long [n]
    churn: torch.Tensor  # float [n], 0/1

    def rows(self, index: Sequence[int]) -> Targets:
        i = torch.as_tensor(index, dtype=torch.long)
        return Targets(self.strength[i], self.intent_type[i], self.churn[i])


def as_tensors(targets: dict[str, list[int]]) -> Targets:
    """Label indices per head (`training.data.windows.targets_of`) as the loop's tensors."""
    return Targets(
        torch.tensor(targets["strength"], dtype=torch.long),
        torch.tensor(targets["intent_type"], dtype=torch.long),
        torch.tensor(targets["churn"], dtype=torch.float32),
    )


def concat(a: Targets, b: Targets) -> Targets:
    return Targets(torch.cat([a.strength, b.strength]), torch.cat([a.intent_type,
                   b.intent_type]), torch.cat([a.churn, b.churn]))


LossFn = Callable[[HeadOutputs, Targets], torch.Tensor]
Features = np.ndarray | torch.Tensor | None  # [n, n_features], row-aligned with the tokens


def feature_tensor(model: IntentBert, features: Features, rows: int) -> torch.Tensor | None:
    """The FEATURES rows as float32 for a network with a tower; None for a text-only one (and a
    clear error when a tower's rows are missing or the wrong shape)."""
    if not model.n_features:
        return None
    if features is None:
        raise ValueError(f"the network has a feature tower ({model.n_features} columns): "
                         "pass its FEATURES rows")
    out = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if out.shape != (rows, model.n_features):
        raise ValueError(f"FEATURES {tuple(out.shape)} for {rows} rows of "
                         f"{model.n_features} columns")
    return out


def _rows(features: torch.Tensor | None, index: Sequence[int]) -> torch.Tensor | None:
    return None if features is None else features[torch.as_tensor(index, dtype=torch.long)]


def multitask_loss(logits: HeadOutputs, targets: Targets) -> torch.Tensor:
    """The three heads' losses, summed with equal weight."""
    return (
        nn.functional.cross_entropy(logits.strength, targets.strength)
        + nn.functional.cross_entropy(logits.intent_type, targets.intent_type)
        + nn.functional.binary_cross_entropy_with_logits(logits.churn, targets.churn)
    )


def loss_over(heads: frozenset[str]) -> Callable[[HeadOutputs, Targets], torch.Tensor]:
    """`multitask_loss` over some heads only: a head whose training windows carry one label
    (an orders-only history has no intent type but `purchase`) is not trained."""
    def loss(logits: HeadOutputs, targets: Targets) -> torch.Tensor:
        terms = {
            "strength": lambda: nn.functional.cross_entropy(logits.strength, targets.strength),
            "intent_type": lambda: nn.functional.cross_entropy(logits.intent_type,
                                                               targets.intent_type),
            "churn": lambda: nn.functional.binary_cross_entropy_with_logits(logits.churn,
                                                                            targets.churn),
        }
        return sum((terms[h]() for h in sorted(heads)), torch.zeros((), device=logits.churn.device))

    return loss


def strong_vs_rest_loss(logits: HeadOutputs, targets: Targets) -> torch.Tensor:
    """Binary loss on P(strong) from the strength head (UCI: Revenue = the session converted)."""
    log_p = logits.strength.log_softmax(dim=-1)
    logit = log_p[:, 0] - torch.logsumexp(log_p[:, 1:], dim=-1)  # log P(strong) / P(not strong)
    return nn.functional.binary_cross_entropy_with_logits(logit, targets.strength.eq(0).float())


@dataclass(frozen=True, slots=True)
class FitConfig:
    epochs: float
    max_steps: int | None
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    checks_per_epoch: int  # validation checks, spread evenly, the last on the final step
    patience: int  # validation checks without improvement before stopping
    seed: int
    progress: bool = True
    # Validate the starting weights too: a trained model tuned further may end worse than it
    # began. Freshly initialised heads never are the best, so a fresh fine-tune skips the pass.
    initial_check: bool = True


def total_steps(n_rows: int, config: FitConfig) -> int:
    """Optimizer steps of a fit over `n_rows` training rows."""
    per_epoch = math.ceil(n_rows / config.batch_size)
    return config.max_steps or max(1, math.ceil(config.epochs * per_epoch))


def check_steps(n_rows: int, config: FitConfig) -> list[int]:
    """The steps a fit validates at: `checks_per_epoch` an epoch, spaced evenly (gaps differ by
    at most one step) with the last on the final step, where a check a few steps before the end
    would only repeat it."""
    total = total_steps(n_rows, config)
    epochs = total / math.ceil(n_rows / config.batch_size)
    n = min(total, max(1, round(epochs * config.checks_per_epoch)))
    return sorted({math.ceil(i * total / n) for i in range(1, n + 1)})


@dataclass(frozen=True, slots=True)
class FitResult:
    steps: int
    best_step: int
    best_val_loss: float
    stopped_early: bool
    history: list[dict[str, float]]  # one entry per validation check


def evaluate_loss(
    model: IntentBert,
    tokens: Sequence[Sequence[int]],
    targets: Targets,
    loss_fn: LossFn,
    batch_size: int,
    features: Features = None,
) -> float:
    model.eval()
    feats = feature_tensor(model, features, len(tokens))
    total, order = 0.0, sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            ids, mask = pad([tokens[i] for i in index])
            logits = model(ids, mask, _rows(feats, index))
            total += loss_fn(logits, targets.rows(index)).item() * len(index)
    return total / max(1, len(tokens))


def optimizer_and_schedule(model: IntentBert, config: FitConfig, total: int) -> tuple[
        torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and LayerNorm weights) with linear warm-up and decay."""
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    return optimizer, get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total), total)


@dataclass
class BestWeights:
    """Early stopping's memory: the best validation loss so far, its step and weights."""

    patience: int
    loss: float = math.inf
    step: int = 0
    state: dict[str, torch.Tensor] | None = None
    waited: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def check(self, model: IntentBert, step: int, val_loss: float, **logged: float) -> bool:
        """Record a validation check; True when patience ran out."""
        self.history.append({"step": step, **logged, "val_loss": val_loss})
        if val_loss < self.loss:
            self.loss, self.step, self.waited = val_loss, step, 0
            self.state = copy.deepcopy(model.state_dict())
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self, model: IntentBert) -> None:
        if self.state is None:  # every check NaN (fresh heads have no starting weights to keep)
            raise FloatingPointError(
                f"no finite validation loss in {len(self.history)} checks (last: "
                f"{self.history[-1]['val_loss']}); try a lower learning rate")
        model.load_state_dict(self.state)
        model.eval()


def fit(
    model: IntentBert,
    train_tokens: Sequence[Sequence[int]],
    train_targets: Targets,
    val_tokens: Sequence[Sequence[int]],
    val_targets: Targets,
    config: FitConfig,
    loss_fn: LossFn = multitask_loss,
    *,
    train_features: Features = None,
    val_features: Features = None,
) -> FitResult:
    """AdamW with linear warm-up and decay; early stopping on validation loss. The model ends
    with the weights of its best validation check. A tower network also takes each split's
    FEATURES rows (normalised with the statistics it holds: `fit_normalisation` first)."""
    train_feats = feature_tensor(model, train_features, len(train_tokens))
    val_feats = feature_tensor(model, val_features, len(val_tokens))
    rng = random.Random(f"batches:{config.seed}")
    lengths = [len(t) for t in train_tokens]
    total = total_steps(len(train_tokens), config)
    checks = set(check_steps(len(train_tokens), config))
    optimizer, schedule = optimizer_and_schedule(model, config, total)
    best = BestWeights(config.patience)

    def validation_loss() -> float:
        return evaluate_loss(model, val_tokens, val_targets, loss_fn, config.batch_size * 2,
                             val_feats)

    if config.initial_check:
        best.check(model, 0, validation_loss())
    batches: list[list[int]] = []
    bar = progress_bar(enabled=config.progress, total=total, desc="fine-tuning", unit="step",
                       mininterval=2.0)
    running, step, stopped_early = None, 0, False
    while step < total:
        if not batches:
            batches = length_grouped_batches(lengths, config.batch_size, rng)
        index = batches.pop()
        model.train()
        ids, mask = pad([train_tokens[i] for i in index])
        loss = loss_fn(model(ids, mask, _rows(train_feats, index)), train_targets.rows(index))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", best_val=f"{best.loss:.3f}")
        if step in checks and best.check(model, step, validation_loss(), train_loss=running) \
                and step < total:
            stopped_early = True
            break
    bar.close()
    best.restore(model)
    return FitResult(step, best.step, best.loss, stopped_early, best.history)


def predict(
    model: IntentBert, tokens: Sequence[Sequence[int]], batch_size: int = 64,
    features: Features = None,
) -> dict[str, np.ndarray]:
    """Probabilities per head in input order: strength [n,3], intent_type [n,6], churn [n]."""
    model.eval()
    feats = feature_tensor(model, features, len(tokens))
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
    parts: dict[str, list[np.ndarray]] = {"strength": [], "intent_type": [], "churn": []}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            ids, mask = pad([tokens[i] for i in index])
            probs = model.probabilities(ids, mask, _rows(feats, index))
            parts["strength"].append(probs.strength.numpy())
            parts["intent_type"].append(probs.intent_type.numpy())
            parts["churn"].append(probs.churn.numpy())
    inverse = np.argsort(np.asarray(order))
    return {name: np.concatenate(chunks)[inverse] for name, chunks in parts.items()}
