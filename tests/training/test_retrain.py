"""Retraining's gate: a worse candidate is rejected and nothing is exported; a candidate that
passes becomes version N+1. Uses a real feedback store and the real export, tiny model."""

from __future__ import annotations

import pytest
import torch

from inference import repository
from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.repository import REPOSITORY_TEMPLATE, copy_repository
from streams.core.feedback import FeedbackExample, HeadFeedback, LabelPolicyRef, Labels
from streams.core.labelling import DEFAULT_LABEL_POLICY
from streams.core.records import HeadScore, Window
from streams.sidecar.store import FeedbackStore
from training import retrain
from training.arguments import RetrainArguments
from training.data.simulator import SimConfig, simulate
from training.data.windows import build_splits, worker_session_policy
from training.evaluate.gate import gate
from training.retrain import EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_ROLLED, ips_weight, run

LIVE = {"strength": 0.6, "intent_type": 0.9, "churn": 0.6}


@pytest.mark.parametrize(
    ("candidate", "accepted"),
    [
        ({"strength": 0.65, "intent_type": 0.9, "churn": 0.62}, True),
        ({"strength": 0.60, "intent_type": 0.9, "churn": 0.60}, False),  # no gain
        ({"strength": 0.80, "intent_type": 0.8, "churn": 0.70}, False),  # one head drops 0.1
        ({"strength": 0.50, "intent_type": 0.8, "churn": 0.50}, False),
    ],
)
def test_gate(candidate, accepted):
    assert gate(LIVE, candidate, margin=0.0, max_head_drop=0.02).accepted is accepted


def head(propensity: float, alerted: bool, cooldown: bool = False) -> HeadFeedback:
    return HeadFeedback(probability=0.5, propensity=propensity, cooldown=cooldown,
                        alerted=alerted, explored=False, alert_id="a" if alerted else None,
                        responses=[])


@pytest.mark.parametrize(
    ("intent", "churn", "weight"),
    [
        (head(0.0, False), head(0.0, False), 1.0),  # never alertable: plain example
        (head(0.05, False), head(0.0, False), 1 / 0.95),  # held below threshold
        (head(0.95, False), head(0.0, False), 20.0),  # held back by exploration: rare, weighty
        (head(0.95, True), head(0.0, False), None),  # alerted by chance: outcome confounded
        (head(1.0, True), head(0.0, False), 1.0),  # always alerted: kept, bias documented
        # In cooldown nothing could be sent, whatever the score: P(alert) = 0, a plain example.
        (head(0.95, False, cooldown=True), head(0.0, False), 1.0),
        (head(1.0, False, cooldown=True), head(0.95, False, cooldown=True), 1.0),
        # Each head's own propensity: the churn head's chance alert confounds the example even
        # though the intent head alerted with certainty ...
        (head(1.0, True), head(0.05, True), None),
        # ... and a head held back by exploration weighs even when the other alerted surely.
        (head(1.0, True), head(0.95, False), 20.0),
        (head(0.05, True), head(1.0, False, cooldown=True), None),
        # Both heads held below threshold: P(logged) is the product of the two.
        (head(0.05, False), head(0.05, False), 1 / 0.95**2),
        (head(0.5, False), head(0.5, False), 4.0),
    ],
)
def test_ips_weight(intent, churn, weight):
    example = make_example("u", "t", "weak", "query", False, 0, heads=(intent, churn))
    assert ips_weight(example) == (pytest.approx(weight) if weight is not None else None)


def make_example(user: str, text: str, strength: str, intent_type: str, churn: bool, i: int,
                 heads: tuple[HeadFeedback, HeadFeedback] | None = None) -> FeedbackExample:
    heads = heads or (head(0.0, False), head(0.0, False))
    return FeedbackExample(
        example_id=f"{user}-{i}", user_id=user, session_id=f"s-{user}", model_name="intent_bert",
        model_version=1, window=Window(start=0, end=i, n_events=1, last_event_id="e"),
        text=text, labels=Labels(strength=strength, intent_type=intent_type, churn=churn),
        predicted={"strength": HeadScore(label="weak", probs={"weak": 1.0}),
                   "intent_type": HeadScore(label="query", probs={"query": 1.0})},
        predicted_churn=0.1, heads={"intent": heads[0], "churn": heads[1]},
        label_policy=LabelPolicyRef(horizon_ms=1, churn_after_ms=1), resolved_at=i,
    )


@pytest.fixture
def feedback_repo(tmp_path):
    """A repository with a live tiny model (v1) and a store of simulated, labelled feedback."""
    torch.manual_seed(0)
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "repo")
    export_version(IntentBert.tiny(vocab_size=30522), repo)
    histories = simulate(120, SimConfig(seed=3))
    splits = build_splits(histories, worker_session_policy(), DEFAULT_LABEL_POLICY, seed=3,
                          max_windows_per_user=3)
    rows = [x for name in splits for x in splits[name]]
    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        store.add([make_example(x.user_id, x.text, x.strength, x.intent_type, x.churn, i)
                   for i, x in enumerate(rows)])
    return repo, tmp_path / "feedback.sqlite"


def broken(live: IntentBert) -> IntentBert:
    """A clearly worse candidate: every head always answers its rarest class."""
    model = IntentBert.tiny(vocab_size=30522)
    model.load_state_dict(live.state_dict())
    with torch.no_grad():
        for layer, cls in ((model.strength_head, 1), (model.intent_type_head, 4)):
            layer.weight.zero_()
            layer.bias.fill_(-10.0)
            layer.bias[cls] = 10.0
        model.churn_head.weight.zero_()
        model.churn_head.bias.fill_(10.0)
    return model


def test_a_worse_candidate_is_rejected_and_nothing_is_exported(feedback_repo, tmp_path):
    repo, db = feedback_repo
    args = RetrainArguments(feedback_db=str(db), repo=str(repo), out=str(tmp_path / "out"),
                            base_users=0, progress=False)
    code, report = run(args, make_candidate=broken, log=lambda _: None)
    assert code == EXIT_REJECTED
    assert repository.versions(repo / "intent_bert") == [1]
    assert not report["gate"]["accepted"]
    assert sum(report["gate"]["candidate"].values()) < sum(report["gate"]["live"].values())


def test_a_passing_candidate_becomes_the_next_version(feedback_repo, tmp_path):
    repo, db = feedback_repo
    args = RetrainArguments(feedback_db=str(db), repo=str(repo), out=str(tmp_path / "out"),
                            base_users=0, margin=-1.0, max_head_drop=1.0, progress=False)
    code, report = run(args, make_candidate=lambda live: live, log=lambda _: None)
    assert code == EXIT_ROLLED and report["new_version"] == 2
    assert repository.versions(repo / "intent_bert") == [1, 2]


def test_training_texts_are_tokenised_once_per_set(feedback_repo, tmp_path, monkeypatch):
    """The fine-tuning rows index one tokenisation; re-tokenising per row was quadratic."""
    repo, db = feedback_repo
    calls: list[int] = []
    real = retrain.tokenize

    def counting(tokenizer, texts, max_length):
        calls.append(len(texts))
        return real(tokenizer, texts, max_length)

    monkeypatch.setattr(retrain, "tokenize", counting)
    args = RetrainArguments(feedback_db=str(db), repo=str(repo), out=str(tmp_path / "out"),
                            base_users=0, progress=False)
    _, report = run(args, make_candidate=lambda live: live, log=lambda _: None)
    assert report["examples"]["train_used_after_ips"] > 50
    assert len(calls) == 3  # train, held-out, validation


def test_retrain_reads_the_union_of_several_stores(feedback_repo, tmp_path):
    """Two sidecars' stores, overlapping in one example: every example counted once."""
    repo, db = feedback_repo
    with FeedbackStore(db) as store:
        examples = store.examples()
    half = len(examples) // 2
    split = [tmp_path / "a.sqlite", tmp_path / "b.sqlite"]
    for path, part in zip(split, (examples[: half + 1], examples[half:]), strict=True):
        with FeedbackStore(path) as store:
            store.add(part)
    args = RetrainArguments(feedback_db=[str(p) for p in split], repo=str(repo),
                            out=str(tmp_path / "out"), base_users=0, progress=False)
    _, report = run(args, make_candidate=lambda live: live, log=lambda _: None)
    assert report["examples"]["resolved"] == len(examples)


def test_a_missing_store_is_a_clear_error(feedback_repo, tmp_path):
    repo, db = feedback_repo
    messages: list[str] = []
    args = RetrainArguments(feedback_db=[str(db), str(tmp_path / "typo.sqlite")],
                            repo=str(repo), out=str(tmp_path / "out"), progress=False)
    code, _ = run(args, log=messages.append)
    assert code == EXIT_BAD_INPUT
    assert "typo.sqlite does not exist" in messages[0]


def test_examples_on_the_topic_that_do_not_parse_are_counted():
    [good] = [make_example("u", "t", "weak", "query", False, 1)]
    examples, bad = retrain.parse_examples([good.model_dump_json().encode(), b"{}", b"nope"])
    assert examples == [good] and bad == 2


def test_a_live_version_with_a_feature_tower_is_not_retrained_on_feedback(feedback_repo,
                                                                           tmp_path):
    # Feedback examples carry text and outcomes, not FEATURES rows: the tower cannot be fed.
    from streams.core.features import N_FEATURES, feature_schema

    repo, db = feedback_repo
    export_version(IntentBert.tiny(vocab_size=30522, n_features=N_FEATURES,
                                   feature_schema=feature_schema()), repo)
    said: list[str] = []
    args = RetrainArguments(feedback_db=str(db), repo=str(repo), out=str(tmp_path / "out"),
                            base_users=0, progress=False)
    code, _ = run(args, log=said.append)
    assert code == EXIT_BAD_INPUT
    assert "feature tower" in said[0] and "--events" in said[0]
    assert repository.versions(repo / "intent_bert") == [1, 2]
