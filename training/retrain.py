"""Retrain from feedback, gate against the live model, roll the winner onto Triton.

    intentstream retrain [--feedback-db var/feedback.sqlite ...] [--from-topic]
                         [--repo triton_models] [--triton-url 127.0.0.1:8001] [--out runs/retrain]

Examples come from every store given (`--feedback-db`, repeatable: one per sidecar of a group)
or, with `--from-topic`, from the `feedback.examples` topic (SASL/TLS from the settings); either
way each `example_id` once (`streams.sidecar.store.union`). The topic carries each example with
the responses known when it was resolved; a store also joins the ones that came later.

`run()` is a list of named stages: live version N → resolved feedback examples, split by user
into train and held-out → candidate = N fine-tuned on feedback-train (+ freshly simulated base
data, so it does not forget what feedback rarely shows) → both scored on the same held-out
feedback → the gate → only if the candidate wins: export N+1 and ask Triton (explicit model
control) to load it; its `latest: 1` version policy then retires N once N's in-flight requests
finish.

Feedback weighting (IPS, docs/feedback.md): an alert can cause the purchase it predicted, so an
alerted example's label is not the outcome the model should learn. Each head (intent, churn)
has its own decision: P(alert) = 0 in cooldown, else that head's propensity. Training leaves out
an example that any head alerted by chance (P(alert) < 1), and weights the rest by
1 / P(what was logged) = the product over un-alerted heads of 1 / (1 - P(alert)) (the heads'
exploration coins are independent), clipped, which makes the un-alerted sample stand for every
score near the threshold (where exploration held some back). Heads alerted with certainty
(P(alert) = 1) have no un-alerted counterpart; their examples are kept with factor 1 — a known
bias, stated in the report. Weights are applied by seeded resampling, which equals a weighted
loss in expectation.

Exit status: 0 rolled out, 3 rejected by the gate, 2 unusable input (no model, too little data).
Only training/cli.py imports this module (tests/test_layout.py).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from aiokafka.errors import KafkaError

from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import load_tokenizer
from streams.core.feedback import FeedbackExample
from streams.core.labelling import DEFAULT_LABEL_POLICY
from streams.runtime.topic_reader import KafkaRange, read_kafka
from streams.runtime.topics import bootstrap_servers
from streams.settings import Settings
from streams.sidecar.store import read_stores, union
from training.arguments import (
    DEFAULT_FEEDBACK_DB,
    VALIDATION_SHARE,
    RetrainArguments,
    RunArguments,
)
from training.data.simulator import SimConfig, simulate
from training.data.windows import build_splits, split_users, targets_of, worker_session_policy
from training.evaluate.gate import gate
from training.fit.loop import FitConfig, Targets, as_tensors, concat, fit, tokenize
from training.publish import live_network, network_macro_f1s, roll_out

MAX_IPS_WEIGHT = 20.0
EXIT_ROLLED, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 2, 3


class Stop(Exception):
    """Retraining cannot go on: the message says why, the exit status is `code`."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT,
                 report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.report = code, report or {}


@dataclass(frozen=True, slots=True)
class FeedbackSplit:
    """Resolved examples by user, three ways: fine-tune / early-stop / judge — the gate never
    sees a row that chose the candidate's weights."""

    train: list[FeedbackExample]
    validation: list[FeedbackExample]
    held_out: list[FeedbackExample]

    def parts(self) -> dict[str, list[FeedbackExample]]:
        return {"train": self.train, "validation": self.validation, "held_out": self.held_out}


def ips_weight(example: FeedbackExample) -> float | None:
    """None: leave out (a head alerted by chance, its label shows the alert's effect); else
    the example's weight, from each head's own P(alert) (0 while that head was in cooldown)."""
    weight = 1.0
    for h in example.heads.values():
        p_alert = 0.0 if h.cooldown else h.propensity
        if h.alerted:
            if p_alert < 1.0:
                return None
        else:
            weight /= max(1e-6, 1.0 - p_alert)
    return min(MAX_IPS_WEIGHT, weight)


def resample(rows: Sequence[int], weights: Sequence[float], seed: int) -> list[int]:
    """Rows drawn with replacement in proportion to weight, as many as there are rows."""
    return random.Random(f"ips:{seed}").choices(list(rows), weights=list(weights), k=len(rows))


def base_rows(users: int, seed: int, max_length: int, tokenizer: Any) -> tuple[list, Targets]:
    """Freshly simulated training windows, so the candidate keeps what feedback rarely shows."""
    histories = simulate(users, SimConfig(seed=seed + 1000))
    splits = build_splits(histories, worker_session_policy(), DEFAULT_LABEL_POLICY, seed=seed)
    train = splits["train"]
    return (tokenize(tokenizer, [x.text for x in train], max_length),
            as_tensors(targets_of(train)))


async def read_feedback_topic(settings: Settings) -> list[bytes]:
    """Every record value on the feedback topic, from its start to its end as of now."""
    spec = KafkaRange(bootstrap=bootstrap_servers(settings.broker_url),
                      topic=settings.feedback_topic, from_ms=0, until_ms=None,
                      client_kwargs=settings.kafka_client_kwargs())
    return [message.value for message in await read_kafka(spec)]


def parse_examples(values: Sequence[bytes]) -> tuple[list[FeedbackExample], int]:
    """The topic's records as examples, and how many could not be read as one."""
    examples, bad = [], 0
    for value in values:
        try:
            examples.append(FeedbackExample.model_validate_json(value))
        except ValueError:
            bad += 1
    return examples, bad


def load_examples(args: RetrainArguments, log: Callable[[str], None]) -> list[FeedbackExample]:
    """The union of the examples, each id once (stores, or the topic)."""
    if args.from_topic:
        settings = Settings()
        examples, bad = parse_examples(asyncio.run(read_feedback_topic(settings)))
        if bad:
            log(f"retrain: {bad} records on {settings.feedback_topic} are not feedback "
                "examples; left out")
        return union([examples])
    return read_stores(Path(p) for p in args.feedback_db or [DEFAULT_FEEDBACK_DB])


def run(
    args: RetrainArguments,
    make_candidate: Callable[[IntentBert], IntentBert] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[int, dict[str, Any]]:
    """The stages in order; (exit status, report)."""
    try:
        live_version, live = live_model(Path(args.repo))
        examples = feedback(args, log)
        split = split_by_user(examples, args)
        rows = ips_rows(split.train, args.seed)
        tokenizer = load_tokenizer(max_length=live.max_length)
        tokens = {name: tokenize(tokenizer, [e.text for e in part], live.max_length)
                  for name, part in split.parts().items()}  # once per set: rows index into it
        candidate = make_candidate(live) if make_candidate else fine_tune(
            split, tokens, rows, tokenizer, args)
    except Stop as stop:
        log(str(stop))
        return stop.code, stop.report
    held_targets = as_tensors(targets_of(split.held_out))
    result = gate(network_macro_f1s(live, tokens["held_out"], held_targets),
                  network_macro_f1s(candidate, tokens["held_out"], held_targets), args.margin,
                  args.max_head_drop)
    report = retrain_report(live_version, examples, split, rows, result, args)
    if result.accepted:
        report.update(publish(candidate, args, log, result.why))
    else:
        log(f"retrain: rejected ({result.why}); live version {live_version} stays")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain_report.json").write_text(json.dumps(report, indent=2, default=str))
    return (EXIT_ROLLED if result.accepted else EXIT_REJECTED), report


# --- the stages ---------------------------------------------------------------------------------


def live_model(repo: Path) -> tuple[int, IntentBert]:
    """Version N, the one to improve on; a tower network cannot learn from feedback rows."""
    live = live_network(repo)
    if live is None:
        raise Stop(f"retrain: no intent_bert version in {repo}; train one first "
                   "(intentstream train)")
    version, model = live
    if model.n_features:  # feedback examples hold the text and the outcome, not FEATURES rows
        raise Stop(f"retrain: live intent_bert v{version} has a feature tower, and feedback "
                   "examples carry no FEATURES rows; retrain it with `intentstream train "
                   "--events` on the platform's history instead", report={"live_version": version})
    return version, model


def feedback(args: RetrainArguments, log: Callable[[str], None]) -> list[FeedbackExample]:
    """The resolved examples (stored only once resolved), enough of them to learn from."""
    try:
        examples = load_examples(args, log)
    except (OSError, LookupError, TimeoutError, KafkaError) as exc:
        raise Stop(f"retrain: cannot read the feedback examples: {exc}") from exc
    if len(examples) < args.min_examples:
        raise Stop(f"retrain: {len(examples)} resolved feedback examples < --min-examples "
                   f"{args.min_examples}; nothing to learn from yet",
                   report={"examples": len(examples)})
    return examples


def split_by_user(examples: list[FeedbackExample], args: RetrainArguments) -> FeedbackSplit:
    torch.manual_seed(args.seed)
    assignment = split_users(sorted({e.user_id for e in examples}), args.seed,
                             (1 - args.holdout - VALIDATION_SHARE, VALIDATION_SHARE,
                              args.holdout))
    split = FeedbackSplit(*([e for e in examples if assignment[e.user_id] == name]
                            for name in ("train", "validation", "test")))
    if not split.held_out or not split.validation:
        raise Stop("retrain: too few feedback users to hold some out; collect more feedback",
                   report={"examples": len(examples)})
    return split


def ips_rows(train: list[FeedbackExample], seed: int) -> list[int]:
    """Training rows after IPS: chance-alerted examples left out, the rest resampled by weight."""
    weighted = [(i, w) for i, e in enumerate(train) if (w := ips_weight(e)) is not None]
    return resample([i for i, _ in weighted], [w for _, w in weighted], seed)


def fine_tune(split: FeedbackSplit, set_tokens: dict[str, list[list[int]]], rows: list[int],
              tokenizer: Any, args: RetrainArguments) -> IntentBert:
    """N fine-tuned on the IPS-resampled feedback rows (+ simulated base rows)."""
    live = live_network(Path(args.repo))
    assert live is not None  # live_model checked it
    candidate, max_length = live[1], live[1].max_length  # a fresh copy of N's weights
    tokens = [set_tokens["train"][i] for i in rows]  # rows repeat indices into it
    targets = as_tensors(targets_of(split.train)).rows(rows) if rows else None
    if args.base_users:
        base_tokens, base_targets = base_rows(args.base_users, args.seed, max_length, tokenizer)
        tokens = [*tokens, *base_tokens]
        targets = base_targets if targets is None else concat(targets, base_targets)
    if targets is None:
        raise Stop("retrain: no usable training rows after IPS selection")
    train_defaults = RunArguments()  # the schedule `intentstream train` uses by default
    fit(candidate, tokens, targets, set_tokens["validation"],
        as_tensors(targets_of(split.validation)),
        FitConfig(epochs=args.epochs, max_steps=None, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, warmup_ratio=train_defaults.warmup_ratio,
                  weight_decay=train_defaults.weight_decay,
                  checks_per_epoch=train_defaults.evals_per_epoch,
                  patience=train_defaults.patience, seed=args.seed, progress=args.progress))
    return candidate


def publish(candidate: IntentBert, args: RetrainArguments, log: Callable[[str], None],
            why: str) -> dict[str, Any]:
    """Version N+1 in the repository, and loaded on Triton when one is named."""
    new_version = export_version(candidate, Path(args.repo))
    published: dict[str, Any] = {"new_version": new_version}
    if args.triton_url:
        roll_out(args.triton_url)
        published["rolled_out_to"] = args.triton_url
    log(f"retrain: accepted ({why}); exported intent_bert version {new_version}"
        + (f", loaded on {args.triton_url}" if args.triton_url else ""))
    return published


def retrain_report(live_version: int, examples: list[FeedbackExample], split: FeedbackSplit,
                   rows: list[int], result: Any, args: RetrainArguments) -> dict[str, Any]:
    used = sum(ips_weight(e) is not None for e in split.train)
    return {
        "live_version": live_version,
        "examples": {"resolved": len(examples), "train": len(split.train),
                     "train_used_after_ips": used, "validation": len(split.validation),
                     "held_out": len(split.held_out)},
        "gate": asdict(result),
        "arguments": asdict(args),
        "ips": {"max_weight": MAX_IPS_WEIGHT, "note": "heads alerted with certainty kept "
                "at factor 1 (their outcome may include the alert's effect)"},
    }
