"""Training on the platform's own history (training/history.py): reading JSONL and CSV,
validating as the worker does, the time split, an order table, exit 2, the gate, the topic."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.core.events import parse_event_time
from streams.core.labelling import LabelPolicy
from streams.core.timeunits import DAY_MS, HOUR_MS
from streams.settings import Settings
from tests.training.conftest import WORKER_POLICY
from training.arguments import parse_args
from training.data import history
from training.data.event_files import read_events
from training.data.simulator import UserHistory

START = 1_790_000_000_000  # 2026-09-21
FIELDS = ("event_id", "user_id", "ts", "type", "item.id", "item.title", "item.category",
          "item.price", "query", "text", "rating", "page", "duration_s")


def write_jsonl(path: Path, docs: list[dict[str, Any]], extra: tuple[bytes, ...] = ()) -> Path:
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in docs) + b"".join(
        line + b"\n" for line in extra))
    return path


def write_csv(path: Path, docs: list[dict[str, Any]]) -> Path:
    """One column per event field (item.* flattened); optional fields left blank."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for doc in docs:
            row = {k: v for k, v in doc.items() if k != "item"}
            row.update({f"item.{k}": v for k, v in (doc.get("item") or {}).items()})
            writer.writerow({k: row.get(k, "") for k in FIELDS})
    return path


def small_events() -> list[dict[str, Any]]:
    return [
        {"event_id": "b2", "user_id": "bob", "ts": START + 2 * HOUR_MS, "type": "search",
         "query": "usb c cable"},
        {"event_id": "a1", "user_id": "ann", "ts": START, "type": "view",
         "item": {"id": "sku1", "title": "Kettle", "price": 30.0}},
        {"event_id": "a2", "user_id": "ann", "ts": START + 60_000, "type": "add_to_cart",
         "item": {"id": "sku1", "price": 30.0}},
        {"event_id": "b1", "user_id": "bob", "ts": START + HOUR_MS, "type": "review",
         "text": "fine", "rating": 4},
    ]


def settings() -> Settings:
    return Settings()


def test_jsonl_and_csv_read_the_same_events_and_group_them_by_user(tmp_path: Path) -> None:
    docs = small_events()
    read = {}
    for name, write in (("events.jsonl", write_jsonl), ("events.csv", write_csv)):
        messages, description = read_events(write(tmp_path / name, docs))
        validated = history.validate(messages, settings())
        assert validated.records == 4 and not validated.dropped
        read[description["format"]] = history.group_by_user(validated.events)
    assert read["jsonl"] == read["csv"]
    grouped = read["jsonl"]
    assert list(grouped) == ["ann", "bob"]
    assert [d["event_id"] for d in grouped["bob"]] == ["b1", "b2"]  # sorted by event time
    assert grouped["ann"][0]["item"] == {"id": "sku1", "title": "Kettle", "price": 30.0}


def test_invalid_records_are_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    docs = small_events()
    bad = [
        {**docs[1], "event_id": "x1", "ts": 5},  # seconds-for-ms style: before the bounds
        {**docs[1], "event_id": "x2", "type": "teleport"},
        {"event_id": "x3", "user_id": "ann", "ts": START, "type": "search"},  # no query
        docs[1],  # a re-send: same id, same content
        {**docs[2], "item": {"id": "sku9"}},  # same id, other content
    ]
    path = write_jsonl(tmp_path / "events.jsonl", docs + bad, extra=(b"{not json", b"[1]", b""))
    validated = history.validate(read_events(path)[0], settings())
    assert len(validated.events) == 4
    assert validated.dropped == {"bad_timestamp": 1, "unknown_type": 1, "missing_field": 1,
                                 "duplicate": 1, "conflicting_duplicate": 1, "not_json": 1,
                                 "not_object": 1}


def test_event_time_bounds_come_from_the_settings(tmp_path: Path) -> None:
    old = [{**d, "ts": d["ts"] - 30 * 365 * DAY_MS} for d in small_events()]  # 1996
    messages = read_events(write_jsonl(tmp_path / "old.jsonl", old))[0]
    assert history.validate(messages, settings()).dropped == {"bad_timestamp": 4}
    wider = Settings(min_event_time="1990-01-01")
    assert len(history.validate(messages, wider).events) == 4


def test_a_topic_range_counts_events_outside_it() -> None:
    from streams.core.raw_message import RawMessage

    docs = small_events()
    messages = [RawMessage(key=d["user_id"].encode(), value=orjson.dumps(d), topic="t",
                           partition=0, offset=n, timestamp_ms=d["ts"])
                for n, d in enumerate(docs)]
    validated = history.validate(messages, settings(), (START + 1, START + 2 * HOUR_MS))
    assert [e.event_id for e in validated.events] == ["a2", "b1"]
    assert validated.dropped == {"before_range": 1, "after_range": 1}


def test_no_valid_event_prints_the_counts_and_exits_2(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from training.cli import main

    path = write_jsonl(tmp_path / "bad.jsonl", [{**small_events()[0], "ts": 5}],
                       extra=(b"nope", b"nope again"))
    code = main(["--events", str(path), "--tiny", "--out", str(tmp_path / "run"),
                 "--progress", "false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no valid event to train on" in err
    assert "3 records" in err and "not_json 2" in err and "bad_timestamp 1" in err
    assert not (tmp_path / "run" / "model_card.json").exists()


def test_a_missing_file_and_too_short_a_history_exit_2(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from training.cli import main

    args = ["--tiny", "--out", str(tmp_path / "run"), "--progress", "false"]
    assert main(["--events", str(tmp_path / "none.jsonl"), *args]) == 2
    assert "no such file" in capsys.readouterr().err
    short = write_jsonl(tmp_path / "short.jsonl", small_events())  # two hours of events
    assert main(["--events", str(short), *args]) == 2
    assert "no settled window" in capsys.readouterr().err


# --- the time split -------------------------------------------------------------------------------


def sim_docs(histories: list[UserHistory]) -> list[dict[str, Any]]:
    return [e for h in histories for e in h.events]


def load(path: Path, *extra: str) -> history.HistoryData:
    data_args = parse_args(["--events", str(path), *extra])[0]
    return history.load(data_args, settings(), WORKER_POLICY, data_args.label_policy(), 0)


def test_the_split_is_by_time_and_training_never_sees_the_future(
        tmp_path: Path, histories: list[UserHistory]) -> None:
    docs = sim_docs(histories)
    data = load(write_jsonl(tmp_path / "sim.jsonl", docs), "--churn-days", "3")
    split_at = parse_event_time(data.card["history"]["test_from"])
    settle = 3 * DAY_MS
    train, val, test = (data.splits[s] for s in ("train", "validation", "test"))
    assert train and val and test
    assert all(x.window_end + settle < split_at for x in train + val)  # labels settled before
    assert all(x.window_end >= split_at for x in test)
    assert not {x.user_id for x in train} & {x.user_id for x in val}
    assert {x.user_id for x in test} & {x.user_id for x in train}  # the same users, later
    # Nothing at or after the split time reaches training: another future, the same rows.
    other_future = [d for d in docs if d["ts"] < split_at] + [
        {**d, "event_id": f"{d['event_id']}-late", "ts": d["ts"] + DAY_MS}
        for d in docs if d["ts"] >= split_at]
    path = write_jsonl(tmp_path / "other.jsonl", other_future)
    data_args = parse_args(["--events", str(path), "--churn-days", "3"])[0]
    messages = read_events(path)[0]
    grouped = history.group_by_user(history.validate(messages, settings()).events)
    same_split = history.TimeSplit(split_at, max(d["ts"] for d in other_future), settle)
    again = history.history_splits(
        grouped, same_split, WORKER_POLICY, data_args.label_policy(), seed=0,
        validation_share=data_args.validation_share, prefix_share=data_args.prefix_share,
        max_windows_per_user=data_args.windows_per_user, max_heldout_windows_per_user=None,
        timers=settings().timer_policy())
    assert again["train"] == train and again["validation"] == val


def test_only_settled_windows_are_kept() -> None:
    from training.data.windows import Example

    def example(end: int) -> Example:
        return Example("u", "t", "weak", "query", False, end, False)

    kept = history.settled([example(0), example(5), example(9), example(11)], 5, 20, 10)
    assert [x.window_end for x in kept] == [5, 9]


def test_horizons_are_options_and_churn_takes_months(tmp_path: Path) -> None:
    data_args = parse_args(["--events", "x.jsonl", "--horizon-hours", "72",
                            "--churn-days", "90"])[0]
    assert data_args.label_policy() == LabelPolicy(horizon_ms=72 * HOUR_MS,
                                                   churn_after_ms=90 * DAY_MS)


# --- an order table: purchases only ---------------------------------------------------------------


def order_table(users: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    """Orders only, as an order table turned into events: regular buyers, and some who stop."""
    rng = random.Random(seed)
    rows = []
    for u in range(users):
        t = START + rng.randint(0, 20) * DAY_MS
        gap_days = rng.choice([2, 5, 15])
        stop = START + rng.randint(60, 120) * DAY_MS
        n = 0
        while t < stop:
            rows.append({"event_id": f"o{u}-{n}", "user_id": f"c{u:03d}", "ts": t,
                         "type": "purchase",
                         "item": {"id": f"sku{rng.randint(1, 30)}",
                                  "price": round(rng.uniform(5, 200), 2)}})
            n += 1
            t += int(rng.expovariate(1 / gap_days) * DAY_MS) + HOUR_MS
    return rows


def test_an_order_table_gives_churn_from_purchase_gaps(tmp_path: Path) -> None:
    data = load(write_csv(tmp_path / "orders.csv", order_table()), "--churn-days", "14")
    assert data.card["history"]["event_types"] == {"purchase": data.card["history"]
                                                   ["valid_events"]}
    for name in ("train", "test"):
        rows = data.splits[name]
        assert {x.churn for x in rows} == {True, False}  # both, from the gaps alone
        assert {x.strength for x in rows} == {"strong", "weak"}  # no cart events: no medium
        assert {x.intent_type for x in rows} == {"purchase"}


def test_a_purchase_gap_longer_than_the_churn_horizon_is_churn() -> None:
    orders = [{"event_id": f"o{i}", "user_id": "c", "ts": START + day * DAY_MS,
               "type": "purchase", "item": {"id": "sku"}}
              for i, day in enumerate((0, 3, 6, 30, 33))]
    policy = LabelPolicy(horizon_ms=DAY_MS, churn_after_ms=14 * DAY_MS)
    split = history.TimeSplit(START + 60 * DAY_MS, START + 60 * DAY_MS, policy.settles_after_ms)
    older, _ = history.part_examples("c", orders, split, WORKER_POLICY, policy,
                                     prefix_share=0.0, seed=0)
    assert [(x.window_end - START) // DAY_MS for x in older] == [0, 3, 6, 30, 33]
    assert [x.churn for x in older] == [False, False, True, False, True]


# --- the gate -------------------------------------------------------------------------------------


def test_the_gate_exports_only_what_beats_the_live_version(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from inference.model.intent_bert import IntentBert
    from inference.model.tokenizer import load_tokenizer
    from training.data.windows import targets_of
    from training.publish import gate_against_live
    from training.served import ServedVersion

    data = load(write_jsonl(tmp_path / "sim.jsonl", order_table(30)), "--churn-days", "14")
    rows = data.splits["test"]
    torch.manual_seed(0)
    model = IntentBert.tiny(len(load_tokenizer()))
    repo = tmp_path / "repo"
    features = np.asarray([x.features for x in rows])
    users = [x.user_id for x in rows]

    def judge() -> dict:
        return gate_against_live(repo, ServedVersion(model, None, None), [x.text for x in rows],
                                 targets_of(rows), features, users, seed=0)

    first = judge()
    assert first["accepted"] and first["live_version"] is None
    model.save(repo / "intent_bert" / "1" / "artifacts")  # now live: the same weights
    same = judge()
    assert same["live_version"] == 1 and not same["accepted"]  # no gain is no export
    assert "gain +0.000" in same["why"]
    assert "intent_type" in same["skipped_heads"]  # one label on an order table


# --- end to end, on the tiny model ----------------------------------------------------------------


def test_train_on_a_file_of_events_end_to_end(tmp_path: Path, repo: Path,
                                              histories: list[UserHistory]) -> None:
    from training.cli import main

    path = write_jsonl(tmp_path / "sim.jsonl", sim_docs(histories), extra=(b"garbage",))
    out = tmp_path / "run"
    # Kept small (about 45 s of CPU): few steps and windows; the network's quality is not
    # what this checks.
    code = main(["--events", str(path), "--churn-days", "3", "--tiny", "--max-steps", "10",
                 "--windows-per-user", "3",
                 "--runtime", "torch", "--runtime-check-texts", "50", "--progress", "false",
                 "--out", str(out), "--repo", str(repo), "--seed", "1"])
    assert code == 0
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["data"]["history"]["dropped"] == {"not_json": 1}
    assert card["data"]["history"]["users"] == len(histories)
    assert card["gate"]["accepted"] and card["exported"]["intent_bert"] == 1
    versus = card["stacking"]["served_vs_peers"]
    assert {"tfidf_lr", "features_gb", "recency_frequency", "days_since_last_order"} <= set(
        versus["churn"])
    assert all(row["ci95"] is not None for row in versus["strength"].values())
    assert "Training on the platform's own history" in (out / "model_card.md").read_text(
        encoding="utf-8")
