"""The arguments of `intentstream train` and `intentstream retrain`, parsed before anything heavy
is imported.

`--help` and a bad value (one line, exit 2) need neither torch nor scikit-learn; only a run
imports `training.train` (training/cli.py). The train dataclasses are the options
`intentstream train --help` lists, grouped as the run reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers.hf_argparser import HfArgumentParser

from streams.core.events import parse_event_time
from streams.core.labelling import LabelPolicy
from streams.core.timeunits import DAY_MS, HOUR_MS
from training.data.uci import CSV_NAME
from training.evaluate.gate import DEFAULT_MARGIN, DEFAULT_MAX_HEAD_DROP

VALIDATION_SHARE = 0.15  # retrain: share of feedback users that early-stops the fine-tune
DEFAULT_FEEDBACK_DB = "var/feedback.sqlite"
ANY_TIME = (-(2**62), 2**62)  # --from/--to bounds: the settings' event-time bounds judge events
FUSIONS = ("stack", "tower", "both")  # --fusion
WINDOWS = ("worker", "sessions")  # --windows
HISTORY_SPLITS = ("auto", "time", "cut")  # --split
SIMULATED_WINDOWS_PER_USER = 5
UCI_CANDIDATES = (Path("data") / CSV_NAME, Path("..") / "shared" / "data" / CSV_NAME)


@dataclass
class DataArguments:
    users: int = field(default=1500, metadata={"help": "simulated users (split by user)"})
    windows_per_user: int | None = field(
        default=None, metadata={"help": "at most this many labelled windows per training user "
                                        "(seeded sample; default 5 for simulated users, no cap "
                                        "for the platform's own history)"}
    )
    windows: str = field(default="worker", metadata={
        "help": "which windows: worker (what the live worker scores: every session prefix as "
                "its events arrive, each session's close, each silence milestone with FEATURES "
                "as of it) or sessions (each closed session, plus one mid-session window for "
                "--prefix-share of them)"})
    split: str = field(default="auto", metadata={
        "help": "a history's split: time (train and validation settle before a split time, "
                "test after it), cut (one earlier cut: windows whose labels settle by the "
                "history's end, split by user) or auto (time, else cut where a time split "
                "cannot settle labels on both sides)"})
    max_windows: int | None = field(default=200_000, metadata={
        "help": "at most this many training windows in all (a seeded sample; memory)"})
    heldout_windows_per_user: int | None = field(
        default=None, metadata={"help": "the cap for validation and test users (default: "
                                        "--windows-per-user); the stacked heads fit on validation"}
    )
    validation_share: float = field(
        default=0.15, metadata={"help": "share of users held out for early stopping and for "
                                        "fitting the stacked heads"}
    )
    test_share: float = field(default=0.15, metadata={"help": "share of users held out for test"})
    prefix_share: float = field(
        default=0.5, metadata={"help": "share of sessions that also give a mid-session window"}
    )
    sim_days: float = field(default=28.0, metadata={"help": "days of history per user"})
    horizon_hours: float = field(
        default=24.0, metadata={"help": "H: a purchase this soon after the window is `strong`"}
    )
    churn_days: float = field(
        default=7.0, metadata={"help": "D: no activity this long after the window is churn"}
    )
    uci: bool = field(
        default=True, metadata={"help": "also fine-tune and evaluate on the UCI real sessions"}
    )
    uci_csv: str | None = field(
        default=None,
        metadata={"help": f"UCI CSV (default: the first of {[str(p) for p in UCI_CANDIDATES]})"},
    )
    uci_train_limit: int | None = field(
        default=1500,  # keeps the default run within 15 min; 2000 and 4000: docs/model.md
        metadata={"help": "fine-tune on a stratified sample of this many UCI training rows"},
    )
    uci_analytics: bool = field(
        default=True, metadata={"help": "also run the variant with the GA aggregates in the text"}
    )
    # The platform's own history instead of the simulator (training/history.py).
    events: str | None = field(default=None, metadata={
        "help": "train on this file of events (JSONL or CSV), split by time"})
    from_time: str | None = field(default=None, metadata={
        "aliases": ["--from"], "help": "train on the events topic from this event time "
                                       "(ISO-8601 or epoch ms), with --to"})
    to_time: str | None = field(default=None, metadata={
        "aliases": ["--to"], "help": "end of the --from range (exclusive)"})

    @property
    def history(self) -> bool:
        """Training reads the platform's own events (a file or the topic), not the simulator."""
        return bool(self.events or self.from_time or self.to_time)

    def __post_init__(self) -> None:
        if self.users < 20:
            raise ValueError("--users must be >= 20 (each split needs users)")
        if self.windows_per_user is not None and self.windows_per_user < 1:
            raise ValueError("--windows-per-user must be >= 1")
        if self.split not in HISTORY_SPLITS:
            raise ValueError(f"--split must be one of {', '.join(HISTORY_SPLITS)}")
        if self.windows not in WINDOWS:
            raise ValueError(f"--windows must be one of {', '.join(WINDOWS)}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError("--max-windows must be >= 1")
        if self.heldout_windows_per_user is not None and self.heldout_windows_per_user < 1:
            raise ValueError("--heldout-windows-per-user must be >= 1")
        shares = (self.validation_share, self.test_share)
        if min(shares) <= 0 or sum(shares) >= 1:
            raise ValueError("--validation-share and --test-share must be > 0, sum below 1")
        if not 0 <= self.prefix_share <= 1:
            raise ValueError("--prefix-share must be in [0, 1]")
        if self.events and (self.from_time or self.to_time):
            raise ValueError("--events and --from/--to are alternatives; give one")
        if bool(self.from_time) != bool(self.to_time):
            raise ValueError("--from and --to go together")
        if self.from_time and self.to_time:
            start, end = self.history_range()
            if end <= start:
                raise ValueError("--to must be after --from")
        if not self.history and self.sim_days * 24 <= max(self.horizon_hours,
                                                           self.churn_days * 24):
            raise ValueError("--sim-days must exceed the label horizon and churn days")
        if self.uci_train_limit is not None and self.uci_train_limit < 100:
            raise ValueError("--uci-train-limit must be >= 100")

    def history_range(self) -> tuple[int, int]:
        """--from/--to as epoch ms (a history may be from any year: no plausibility bounds)."""
        return _event_time(self.from_time or ""), _event_time(self.to_time or "")

    def simulated_windows_per_user(self) -> int:
        return SIMULATED_WINDOWS_PER_USER if self.windows_per_user is None \
            else self.windows_per_user

    def history_windows_per_user(self) -> int | None:
        return self.windows_per_user

    def split_fractions(self) -> tuple[float, float, float]:
        """Shares of users for train, validation and test."""
        return (1 - self.validation_share - self.test_share, self.validation_share,
                self.test_share)

    def label_policy(self) -> LabelPolicy:
        return LabelPolicy(
            horizon_ms=int(self.horizon_hours * HOUR_MS),
            churn_after_ms=int(self.churn_days * DAY_MS),
        )

    def uci_path(self) -> Path:
        if self.uci_csv:
            return Path(self.uci_csv)
        found = next((p for p in UCI_CANDIDATES if p.is_file()), None)
        if found is None:
            tried = [str(p) for p in UCI_CANDIDATES]
            raise FileNotFoundError(f"UCI CSV not found at {tried}: pass --uci-csv or --no-uci")
        return found


@dataclass
class ModelArguments:
    tiny: bool = field(
        default=False, metadata={"help": "2-layer random encoder (tests), not all-MiniLM-L6-v2"}
    )
    max_length: int = field(
        default=128, metadata={"help": "tokens per text; longer texts lose their beginning"}
    )

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 512:
            raise ValueError("--max-length must be in 8..512")


@dataclass
class RunArguments:
    out: str = field(default="runs/latest", metadata={"help": "model, metrics and model card"})
    repo: str = field(default="triton_models", metadata={"help": "Triton model repository"})
    export: bool = field(
        default=True, metadata={"help": "write a new intent_bert and intent_bert_onnx version"}
    )
    int8: bool = field(default=False, metadata={"help": "also write a dynamic-int8 ONNX file"})
    runtime: str = field(default="auto", metadata={
        "help": "runtime the exported version serves: auto (the fastest that passes the quality "
                "bar on held-out users) or torch, onnxruntime-fp32, onnxruntime-int8, "
                "onnxruntime-cuda, tensorrt-fp16"})
    runtime_check_texts: int = field(default=400, metadata={
        "help": "held-out texts the quality bar scores each runtime on"})
    fusion: str = field(default="stack", metadata={
        "help": "how the behaviour FEATURES join the text: stack (gradient-boosted heads over "
                "[FEATURES, the text network's probabilities], the stacker step), tower (a "
                "feature tower inside IntentBert, fused with the pooled text vector) or both "
                "(the tower network, then the stack over it); docs/model.md has the comparison"})
    seed: int = field(default=0, metadata={"help": "seeds simulation, split, init and batches"})
    epochs: float = field(default=1.8, metadata={"help": "passes over the training windows"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps (over epochs)"})
    batch_size: int = field(default=16, metadata={"help": "windows per step"})
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW peak rate (default 5e-5; tiny model 1e-3)"}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps warming up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    # One per epoch: each check is a pass over the whole validation split (docs/model.md).
    evals_per_epoch: int = field(default=1, metadata={"help": "validation checks per epoch"})
    patience: int = field(default=2, metadata={"help": "checks without improvement before stop"})
    uci_epochs: float = field(default=1.0, metadata={"help": "passes over the UCI training rows"})
    threads: int | None = field(default=None, metadata={"help": "torch threads (default: all)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.uci_epochs <= 0:
            raise ValueError("--epochs and --uci-epochs must be > 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("--max-steps must be >= 1")
        if self.batch_size < 1 or self.evals_per_epoch < 1 or self.patience < 1:
            raise ValueError("--batch-size, --evals-per-epoch and --patience must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("--warmup-ratio must be in [0, 1)")
        if self.fusion not in FUSIONS:
            raise ValueError(f"--fusion must be one of {', '.join(FUSIONS)}")


def _event_time(text: str) -> int:
    """Epoch ms from digits (ms) or ISO-8601 (no zone = UTC); ValueError otherwise."""
    value: int | str = int(text) if text.lstrip("-").isdigit() else text
    try:
        return parse_event_time(value, ANY_TIME)
    except ValueError as error:
        raise ValueError(f"--from/--to {text!r}: {error}") from None


def parse_args(argv: Sequence[str] | None) -> tuple[DataArguments, ModelArguments, RunArguments]:
    """The three argument groups; a value out of range exits 2 with its one-line reason."""
    parser = HfArgumentParser((DataArguments, ModelArguments, RunArguments))
    parser.prog = "intentstream train"
    try:
        return parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None)
    except ValueError as error:  # from a __post_init__ range check
        parser.error(str(error))


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
        default=DEFAULT_MARGIN,
        metadata={"help": "mean macro-F1 the candidate must gain over live"})
    max_head_drop: float = field(
        default=DEFAULT_MAX_HEAD_DROP,
        metadata={"help": "largest macro-F1 loss allowed on any single head"})
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
