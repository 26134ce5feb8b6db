"""`intentstream bench`: its bookkeeping (pure), and one small run end to end on the real
broker and tritonserver. No timing is asserted: the figures are the bench's output, not a test."""

from __future__ import annotations

import orjson
import pytest

from bench import serving
from bench.cli import after_outputs, backlog_scales, main
from bench.measure import BenchError, ModelSpeed, ScoreCoverage
from bench.report import Figures, ratios_line, runtime_table
from bench.serving import fastest_in_process, force_runtime, read_config
from bench.workload import position_in_user, shop_traffic
from inference.model.export import ensure_model
from inference.model.runtimes import INT8_FILE, load_scorer, served_runtime
from inference.repository import REPOSITORY_TEMPLATE, copy_repository


def score(user: str, last_event_id: str, text: str = "view: x", session: str = "") -> bytes:
    return orjson.dumps({"user_id": user, "session_id": session or f"{user}-1",
                         "window": {"last_event_id": last_event_id}, "text": text})


def cpu_instances(repo) -> list[int]:
    """The count of each instance group of the repository's intent_bert, all KIND_CPU."""
    groups = read_config(repo / "intent_bert" / "config.pbtxt").instance_group
    assert all(group.kind == group.KIND_CPU for group in groups)
    return [group.count for group in groups]


def test_traffic_is_deterministic_time_ordered_and_keyed_by_user():
    a, b = shop_traffic(500, 100, seed=1), shop_traffic(500, 100, seed=1)
    assert a.records == b.records and len(a) == 500
    stamps = [orjson.loads(v)["ts"] for _, v in a.records]
    assert stamps == sorted(stamps)
    assert all(orjson.loads(v)["user_id"].encode() == k for k, v in a.records)
    assert not set(a.users) & set(shop_traffic(500, 100, seed=2).users)  # seeds: other users


def test_a_score_covers_its_users_events_up_to_its_window_end():
    traffic = shop_traffic(300, 50, seed=1)
    user = traffic.users[0]
    mine = [e for e, u in zip(traffic.event_ids, traffic.users, strict=True) if u == user]
    assert len(mine) >= 2
    coverage = ScoreCoverage(traffic)
    assert coverage.add(score(user, mine[1])) == [(user, 0), (user, 1)]
    assert coverage.add(score(user, mine[0])) == []  # an older window covers nothing new
    assert coverage.add(score("someone-else", "not-in-traffic")) == []
    assert coverage.scores == 2 and not coverage.complete
    assert coverage.sessions == {f"{user}-1"}  # two scores of one session
    for u, last in traffic.last_event.items():
        coverage.add(score(u, last))
    assert coverage.complete and coverage.remaining == 0


def test_positions_count_each_users_events_in_order():
    traffic = shop_traffic(200, 30, seed=4)
    positions = position_in_user(traffic)
    per_user: dict[str, list[int]] = {}
    for event_id in traffic.event_ids:
        user, index = positions[event_id]
        per_user.setdefault(user, []).append(index)
    assert all(indexes == list(range(len(indexes))) for indexes in per_user.values())


def test_bad_sizes_are_a_usage_error(capsys):
    assert main(["--events", "0"]) == 2
    assert "positive" in capsys.readouterr().err
    assert main(["--backlog-scales", "1,0"]) == 2
    assert main(["--backlog-scales", "one"]) == 2
    assert main(["--repository", "triton_models", "--runtime", "torch"]) == 2
    assert "not --repository" in capsys.readouterr().err


def test_backlog_scales_parse_positive_multiples():
    assert backlog_scales("1,2,4") == [1, 2, 4]
    assert backlog_scales("3") == [3]
    assert backlog_scales("") is None and backlog_scales("2,-1") is None


def test_runtime_table_marks_the_fastest_and_the_served_runtime():
    lines = runtime_table({"torch": 64.4, "onnxruntime-fp32": 58.5, "onnxruntime-int8": 86.7},
                          texts=640, batch=32, fastest="onnxruntime-int8", served="torch")
    assert "640 texts" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows == {"torch": ["64.4", "1.00", "served"], "onnxruntime-fp32": ["58.5", "0.91"],
                    "onnxruntime-int8": ["86.7", "1.35", "fastest"]}


def test_a_forced_runtime_is_set_in_the_benchs_config_with_its_onnx_files(tmp_path):
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    assert served_runtime(repo / "intent_bert", version) == "torch"
    force_runtime(repo, version, "onnxruntime-int8")
    assert served_runtime(repo / "intent_bert", version) == "onnxruntime-int8"
    artifacts = repo / "intent_bert" / str(version) / "artifacts"
    assert (artifacts / INT8_FILE).is_file()
    assert load_scorer(artifacts, "onnxruntime-int8").runtime == "onnxruntime-int8"
    with pytest.raises(BenchError, match="no empty runtime parameter"):
        force_runtime(repo, version, "onnxruntime-fp32")  # already set: not silently kept
    # On CPU the two single-threaded instances stay; a GPU runtime gets one.
    assert cpu_instances(repo) == [2]


def test_a_gpu_runtime_is_served_by_one_instance(tmp_path):
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    force_runtime(repo, version, "onnxruntime-cuda")
    config = (repo / "intent_bert" / "config.pbtxt").read_text(encoding="utf-8")
    assert 'string_value: "onnxruntime-cuda"' in config
    assert cpu_instances(repo) == [1]


def test_a_gpu_runtime_on_a_config_without_the_two_instances_is_refused(tmp_path):
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    config = repo / "intent_bert" / "config.pbtxt"
    config.write_text(config.read_text(encoding="utf-8").replace("count: 2", "count: 3"),
                      encoding="utf-8")
    with pytest.raises(BenchError, match="two-instance CPU group"):
        force_runtime(repo, version, "onnxruntime-cuda")


def test_a_gpu_runtime_changes_only_the_runtime_and_the_instance_count(tmp_path):
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    config = repo / "intent_bert" / "config.pbtxt"
    expected = read_config(config)
    force_runtime(repo, version, "onnxruntime-cuda")
    expected.parameters["runtime"].string_value = "onnxruntime-cuda"
    expected.instance_group[0].count = 1
    assert read_config(config) == expected  # inputs, outputs, threads, batching: as they were
    assert expected.parameters["threads"].string_value == "0" and len(expected.input) == 3


@pytest.mark.parametrize(("edit", "why"), [
    (lambda text: text.replace("instance_group [ { kind: KIND_CPU, count: 2 } ]", ""),
     "no group"),
    (lambda text: text.replace("KIND_CPU, count: 2", "KIND_GPU, count: 2"), "a GPU group"),
    (lambda text: text.replace("instance_group [ { kind: KIND_CPU, count: 2 } ]",
                               "instance_group [ { kind: KIND_CPU, count: 2 }, "
                               "{ kind: KIND_CPU, count: 2 } ]"), "two groups"),
])
def test_a_gpu_runtime_without_one_two_instance_cpu_group_is_refused_and_nothing_written(
        tmp_path, edit, why):
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    config = repo / "intent_bert" / "config.pbtxt"
    edited = edit(config.read_text(encoding="utf-8"))
    config.write_text(edited, encoding="utf-8")
    with pytest.raises(BenchError, match="two-instance CPU group"):
        force_runtime(repo, version, "onnxruntime-cuda")
    assert config.read_text(encoding="utf-8") == edited, why


def test_a_config_that_does_not_parse_is_a_bench_error(tmp_path):
    config = tmp_path / "config.pbtxt"
    config.write_text("instance_group [ { kind: KIND_CPU, count: two } ]\n", encoding="utf-8")
    with pytest.raises(BenchError, match="not a Triton model config"):
        read_config(config)


def test_a_config_without_a_runtime_parameter_is_refused(tmp_path):
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    config = repo / "intent_bert" / "config.pbtxt"
    config.write_text(config.read_text(encoding="utf-8").replace('key: "runtime"', 'key: "rt"'),
                      encoding="utf-8")
    with pytest.raises(BenchError, match="no empty runtime parameter"):
        force_runtime(repo, version, "torch")


def test_the_derived_figures_are_written_after_the_measured_ones():
    measured = {name: 2.0 for name in Figures.__dataclass_fields__}
    measured["cascade_routes"] = {"network": 1.0}
    figures = Figures(**measured)
    written = figures.as_json()
    assert list(written)[: len(measured)] == list(measured)
    assert written["over_naive"] == figures.worker_events_per_s / figures.naive_events_per_s
    assert list(written)[len(measured):] == [
        "pipeline_over_model", "over_naive", "over_bare_faust", "p99_over_batch",
        "p99_over_batch_at_load", "events_per_text", "batching_gain", "cascade",
        "network_share"]


def test_the_cascade_ratio_and_the_network_share_come_from_the_two_drains_and_the_routes():
    measured = {name: 2.0 for name in Figures.__dataclass_fields__}
    routes = {"network": 30.0, "band": 10.0, "features": 40.0, "stale": 15.0, "exact": 5.0}
    figures = Figures(**{**measured, "worker_events_per_s": 600.0,
                         "all_network_events_per_s": 200.0, "cascade_routes": routes})
    assert figures.cascade == 3.0 and figures.network_share == 0.4
    assert "cascade=3.00 network_share=0.40 " in ratios_line(figures)
    unmeasured = Figures(**{**measured, "all_network_events_per_s": None,
                            "cascade_routes": {}})
    assert unmeasured.cascade is None and unmeasured.network_share is None
    assert "cascade=- network_share=- " in ratios_line(unmeasured)


def test_an_agents_drain_ends_at_its_last_output_not_counting_warm_ups():
    done = after_outputs(2)
    assert not done(b'{"user_id": "bench-warm-up"}')
    assert not done(b'{"user_id": "u-1"}')
    assert not done(b'{"user_id": "bench-warm-up"}')
    assert done(b'{"user_id": "u-2"}')


def test_the_default_runtime_is_the_fastest_in_process_whatever_the_bar_says(tmp_path,
                                                                             monkeypatch):
    # Untrained weights: the bar would refuse int8 (docs/model.md), but speed is what is judged.
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "triton_models")
    version = ensure_model(repo, tiny=True)
    artifacts = repo / "intent_bert" / str(version) / "artifacts"
    timed: list[str] = []

    def speeds(where, texts, batch, names):
        assert (where / INT8_FILE).is_file() and texts and batch == 32
        timed.extend(names)
        rates = {"torch": 40.0, "onnxruntime-fp32": 35.0, "onnxruntime-int8": 90.0}
        return {name: ModelSpeed(rates.get(name, 1.0), batch / rates.get(name, 1.0), batch)
                for name in names}

    monkeypatch.setattr(serving, "runtime_speeds", speeds)
    assert fastest_in_process(artifacts, version) == "onnxruntime-int8"
    assert {"torch", "onnxruntime-fp32", "onnxruntime-int8"} <= set(timed)
