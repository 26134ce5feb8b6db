"""Retrain from feedback, gate against the live model, roll the winner onto Triton.

    intentstream retrain [--feedback-db var/feedback.sqlite ...] [--from-topic]
                         [--repo triton_models] [--triton-url 127.0.0.1:8001] [--out runs/retrain]

Examples come from every store given (`--feedback-db`, repeatable: one per sidecar of a group)
or, with `--from-topic`, from the `feedback.examples` topic (SASL/TLS from the settings); either
way each `example_id` once (`streams.sidecar.store.union`). The topic carries each example with
the responses known when it was resolved; a store also joins the ones that came later.

One linear `run()`: live version N → resolved feedback examples, split by user into train and
held-out → candidate = N fine-tuned on feedback-train (+ freshly simulated base data, so it does
not forget what feedback rarely shows) → both scored on the same held-out feedback → the gate →
only if the candidate wins: export N+1 and ask Triton (explicit model control) to load it; its
`latest: 1` version policy then retires N once N's in-flight requests finish.

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
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiokafka.errors import KafkaError
from transformers import HfArgumentParser

from inference import repository
from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS
from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import load_tokenizer
from inference.repository import INTENT_BERT
from streams.core.feedback import FeedbackExample
from streams.settings import Settings
from streams.sidecar.store import read_stores, union
from training.data import split_users
from training.loop import FitConfig, Targets, fit, predict, tokenize
from training.metrics import head_metrics

MAX_IPS_WEIGHT = 20.0
VALIDATION_SHARE = 0.15
GATE_HEADS = ("strength", "intent_type", "churn")
EXIT_ROLLED, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 2, 3
DEFAULT_FEEDBACK_DB = "var/feedback.sqlite"


@dataclass
class RetrainArguments:
    # "extend": `--feedback-db a --feedback-db b` and `--feedback-db a b` both read a and b.
    feedback_db: list[str] = field(default_factory=list, metadata={
        "help": f"feedback store; repeat for each sidecar's (default {DEFAULT_FEEDBACK_DB})",
        "action": "extend"})
    from_topic: bool = field(default=False, metadata={
        "help": "read the examples from the feedback topic instead of stores"})
    repo: str = field(default="triton_models", metadata={"help": "Triton model repository"})
    triton_url: str | None = field(
        default=None, metadata={"help": "gRPC host:port of the live Triton to load N+1 on"})
    out: str = field(default="runs/retrain", metadata={"help": "report directory"})
    holdout: float = field(default=0.3, metadata={"help": "share of feedback users held out"})
    min_examples: int = field(default=40, metadata={"help": "fewer resolved examples: stop"})
    base_users: int = field(default=200, metadata={"help": "simulated users mixed in (0: none)"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training rows"})
    batch_size: int = field(default=16)
    learning_rate: float = field(default=3e-5)
    margin: float = field(
        default=0.0, metadata={"help": "mean macro-F1 the candidate must gain over live"})
    max_head_drop: float = field(
        default=0.02, metadata={"help": "largest macro-F1 loss allowed on any single head"})
    seed: int = field(default=0)
    progress: bool = field(default=True)

    def __post_init__(self) -> None:
        if isinstance(self.feedback_db, str):
            self.feedback_db = [self.feedback_db]
        if self.from_topic and self.feedback_db:
            raise ValueError("--from-topic and --feedback-db are alternatives; give one")
        if not 0 < self.holdout < 1 - VALIDATION_SHARE:
            raise ValueError(f"--holdout must be in (0, {1 - VALIDATION_SHARE})")
        if self.min_examples < 2:
            raise ValueError("--min-examples must be >= 2")


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    why: str
    live: dict[str, float]
    candidate: dict[str, float]


def gate(live: dict[str, float], candidate: dict[str, float], margin: float,
         max_head_drop: float) -> GateResult:
    """Candidate wins when its mean macro-F1 beats live by `margin` and no head drops much."""
    drops = {h: live[h] - candidate[h] for h in GATE_HEADS}
    worst = max(drops, key=drops.__getitem__)
    gain = float(np.mean([candidate[h] for h in GATE_HEADS]) - np.mean(
        [live[h] for h in GATE_HEADS]))
    if drops[worst] > max_head_drop:
        return GateResult(False, f"{worst} macro-F1 drops by {drops[worst]:.3f}", live, candidate)
    if gain <= margin:
        return GateResult(False, f"mean macro-F1 gain {gain:+.3f} <= margin {margin}", live,
                          candidate)
    return GateResult(True, f"mean macro-F1 gain {gain:+.3f}", live, candidate)


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


def targets_of(examples: Sequence[FeedbackExample]) -> Targets:
    return Targets(
        strength=torch.tensor([STRENGTH_LABELS.index(e.labels.strength) for e in examples]),
        intent_type=torch.tensor(
            [INTENT_TYPE_LABELS.index(e.labels.intent_type) for e in examples]),
        churn=torch.tensor([float(e.labels.churn) for e in examples]),
    )


def resample(rows: Sequence[int], weights: Sequence[float], seed: int) -> list[int]:
    """Rows drawn with replacement in proportion to weight, as many as there are rows."""
    return random.Random(f"ips:{seed}").choices(list(rows), weights=list(weights), k=len(rows))


def macro_f1s(model: IntentBert, tokens: list[list[int]], targets: Targets,
              features: np.ndarray | None = None) -> dict[str, float]:
    """Each head's macro-F1 (threshold 0.5); `features`, row-aligned, for a tower network (a
    text-only network ignores them)."""
    probs = predict(model, tokens, features=features if model.n_features else None)
    churn = probs["churn"]
    return {
        "strength": head_metrics(targets.strength.tolist(), probs["strength"],
                                 STRENGTH_LABELS)["macro_f1"],
        "intent_type": head_metrics(targets.intent_type.tolist(), probs["intent_type"],
                                    INTENT_TYPE_LABELS)["macro_f1"],
        "churn": head_metrics(targets.churn.long().tolist(), np.stack([1 - churn, churn], 1),
                              ("no_churn", "churn"))["macro_f1"],
    }


def base_rows(users: int, seed: int, max_length: int, tokenizer: Any) -> tuple[list, Targets]:
    """Freshly simulated training windows, so the candidate keeps what feedback rarely shows."""
    from streams.core.labelling import DEFAULT_LABEL_POLICY
    from training.data import build_splits
    from training.simulator import SimConfig, simulate
    from training.train import as_tensors, worker_session_policy
    from training.train import targets_of as sim_targets_of

    histories = simulate(users, SimConfig(seed=seed + 1000))
    splits = build_splits(histories, worker_session_policy(), DEFAULT_LABEL_POLICY, seed=seed)
    train = splits["train"]
    return (tokenize(tokenizer, [x.text for x in train], max_length),
            as_tensors(sim_targets_of(train)))


def concat(a: Targets, b: Targets) -> Targets:
    return Targets(torch.cat([a.strength, b.strength]), torch.cat([a.intent_type,
                   b.intent_type]), torch.cat([a.churn, b.churn]))


async def read_topic(settings: Settings, timeout_s: float = 60.0, idle_s: float = 1.0
                     ) -> list[bytes]:
    """Every record value on the feedback topic, from its start to its end as of now.

    The end: every partition at its end offset and then nothing new for `idle_s` (the embedded
    broker reports the start of the last batch + 1 as the end, docs/broker.md)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.runtime.topics import bootstrap_servers

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker_url), enable_auto_commit=False,
        auto_offset_reset="earliest", group_id=None, **settings.kafka_client_kwargs())
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.feedback_topic) or set()
        if not partitions:
            await consumer.topics()  # refresh metadata once: the first answer may predate it
            partitions = consumer.partitions_for_topic(settings.feedback_topic) or set()
        tps = [TopicPartition(settings.feedback_topic, p) for p in sorted(partitions)]
        if not tps:
            raise LookupError(f"topic {settings.feedback_topic!r} does not exist")
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        loop = asyncio.get_running_loop()
        last_record = loop.time()
        async with asyncio.timeout(timeout_s):
            while (any([await consumer.position(tp) < end for tp, end in ends.items()])
                   or loop.time() - last_record < idle_s):
                for records in (await consumer.getmany(*tps, timeout_ms=200)).values():
                    values += [r.value for r in records]
                    last_record = loop.time() if records else last_record
        return values
    finally:
        await consumer.stop()


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
        examples, bad = parse_examples(asyncio.run(read_topic(settings)))
        if bad:
            log(f"retrain: {bad} records on {settings.feedback_topic} are not feedback "
                "examples; left out")
        return union([examples])
    return read_stores(Path(p) for p in args.feedback_db or [DEFAULT_FEEDBACK_DB])


def roll_out(triton_url: str) -> None:
    """Explicit model control: (re)loading intent_bert picks up its newest version."""
    import tritonclient.grpc as grpcclient

    grpcclient.InferenceServerClient(triton_url).load_model(INTENT_BERT)


def run(
    args: RetrainArguments,
    make_candidate: Callable[[IntentBert], IntentBert] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[int, dict[str, Any]]:
    repo = Path(args.repo)
    versions = repository.versions(repo / INTENT_BERT)
    if not versions:
        log(f"retrain: no intent_bert version in {repo}; train one first (intentstream train)")
        return EXIT_BAD_INPUT, {}
    live_version = max(versions)
    live = IntentBert.load(repo / INTENT_BERT / str(live_version) / "artifacts")
    if live.n_features:  # feedback examples hold the text and the outcome, not FEATURES rows
        log(f"retrain: live intent_bert v{live_version} has a feature tower, and feedback "
            "examples carry no FEATURES rows; retrain it with `intentstream train --events` "
            "on the platform's history instead")
        return EXIT_BAD_INPUT, {"live_version": live_version}
    try:
        examples = load_examples(args, log)  # stored only once resolved
    except (OSError, LookupError, TimeoutError, KafkaError) as exc:
        log(f"retrain: cannot read the feedback examples: {exc}")
        return EXIT_BAD_INPUT, {}
    if len(examples) < args.min_examples:
        log(f"retrain: {len(examples)} resolved feedback examples < --min-examples "
            f"{args.min_examples}; nothing to learn from yet")
        return EXIT_BAD_INPUT, {"examples": len(examples)}

    torch.manual_seed(args.seed)
    # By user, three ways: fine-tune / early-stop / judge — the gate never sees a row that
    # chose the candidate's weights.
    split = split_users(sorted({e.user_id for e in examples}), args.seed,
                        (1 - args.holdout - VALIDATION_SHARE, VALIDATION_SHARE, args.holdout))
    train_ex = [e for e in examples if split[e.user_id] == "train"]
    val_ex = [e for e in examples if split[e.user_id] == "validation"]
    held_ex = [e for e in examples if split[e.user_id] == "test"]
    if not held_ex or not val_ex:
        log("retrain: too few feedback users to hold some out; collect more feedback")
        return EXIT_BAD_INPUT, {"examples": len(examples)}
    weighted = [(i, w) for i, e in enumerate(train_ex) if (w := ips_weight(e)) is not None]
    rows = resample([i for i, _ in weighted], [w for _, w in weighted], args.seed)

    tokenizer = load_tokenizer(max_length=live.max_length)
    tok = lambda exs: tokenize(tokenizer, [e.text for e in exs], live.max_length)  # noqa: E731
    all_train_tokens = tok(train_ex)  # once: rows repeat indices into it
    train_tokens = [all_train_tokens[i] for i in rows]
    train_targets = targets_of(train_ex).rows(rows) if rows else None
    held_tokens, held_targets = tok(held_ex), targets_of(held_ex)
    val_tokens, val_targets = tok(val_ex), targets_of(val_ex)

    candidate = make_candidate(live) if make_candidate else IntentBert.load(
        repo / INTENT_BERT / str(live_version) / "artifacts")
    if make_candidate is None:
        tokens, targets = train_tokens, train_targets
        if args.base_users:
            base_tokens, base_targets = base_rows(args.base_users, args.seed, live.max_length,
                                                  tokenizer)
            tokens = [*tokens, *base_tokens]
            targets = base_targets if targets is None else concat(targets, base_targets)
        if targets is None:
            log("retrain: no usable training rows after IPS selection")
            return EXIT_BAD_INPUT, {}
        fit(candidate, tokens, targets, val_tokens, val_targets, FitConfig(
            epochs=args.epochs, max_steps=None, batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_ratio=0.1, weight_decay=0.01,
            checks_per_epoch=1, patience=2, seed=args.seed, progress=args.progress))

    result = gate(macro_f1s(live, held_tokens, held_targets),
                  macro_f1s(candidate, held_tokens, held_targets), args.margin,
                  args.max_head_drop)
    report: dict[str, Any] = {
        "live_version": live_version,
        "examples": {"resolved": len(examples), "train": len(train_ex),
                     "train_used_after_ips": len(weighted), "validation": len(val_ex),
                     "held_out": len(held_ex)},
        "gate": asdict(result),
        "arguments": asdict(args),
        "ips": {"max_weight": MAX_IPS_WEIGHT, "note": "heads alerted with certainty kept "
                "at factor 1 (their outcome may include the alert's effect)"},
    }
    if result.accepted:
        new_version = export_version(candidate, repo)
        report["new_version"] = new_version
        if args.triton_url:
            roll_out(args.triton_url)
            report["rolled_out_to"] = args.triton_url
        log(f"retrain: accepted ({result.why}); exported intent_bert version {new_version}"
            + (f", loaded on {args.triton_url}" if args.triton_url else ""))
    else:
        log(f"retrain: rejected ({result.why}); live version {live_version} stays")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain_report.json").write_text(json.dumps(report, indent=2, default=str))
    return (EXIT_ROLLED if result.accepted else EXIT_REJECTED), report


def main(argv: Sequence[str] | None = None) -> int:
    parser = HfArgumentParser(RetrainArguments)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=list(argv) if argv is not None
                                                     else None)
    except ValueError as exc:
        print(f"retrain: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    code, _ = run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
