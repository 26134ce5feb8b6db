"""What Triton serves in `intentstream bench`: the repository (a given one, or an untrained model
exported into a copy of the template), the runtime intent_bert runs on, and the tiny model that
takes the model's cost out of ratio (3).

The runtime is chosen for speed, not quality: the bench's weights are untrained, and on them the
quality bar refuses int8 for flipping near-ties (docs/model.md), so `auto` would serve a slower
runtime than a trained deployment's `auto` picks. The bar is applied where weights are trained
(export, train).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_encoding, text_format
from google.protobuf.message import Message
from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInstanceGroup

from bench.cascade_heads import write_cascade_heads
from bench.measure import BenchError, fastest, runtime_speeds
from bench.report import say
from bench.workload import held_out_sessions
from inference import repository
from inference.client import NETWORK_OUTPUTS
from inference.model.export import ensure_model
from inference.model.intent_bert import IntentBert
from inference.model.onnx import write_onnx_files
from inference.model.quality import AUTO
from inference.model.quality import BATCH as QUALITY_BATCH
from inference.model.runtimes import RUNTIMES, available_runtimes, served_runtime
from inference.repository import ENSEMBLE, INTENT_BERT, REPOSITORY_TEMPLATE, copy_repository
from inference.tritonserver import TritonServer

FASTEST = "fastest"  # --runtime: the fastest in process, whatever the bar says
HELD_OUT_USERS = 60  # about 700 session windows for the quality bar
# The runtime choice: enough texts that one burst of other load cannot decide it (~2,000).
RUNTIME_CHOICE_USERS = 180


@dataclass(frozen=True)
class ServedModel:
    """The intent_bert version Triton serves, where its files are, and the runtime it runs."""

    version: int
    artifacts: Path
    runtime: str


def served_model(repo: Path) -> ServedModel:
    version = repository.versions(repo / INTENT_BERT)[-1]
    return ServedModel(version, repo / INTENT_BERT / str(version) / "artifacts",
                       served_runtime(repo / INTENT_BERT, version))


@contextlib.contextmanager
def served_repository(workdir: Path, *, repository: Path | None, model: str,
                      runtime: str) -> Iterator[Path]:
    """`repository` as it is, else an untrained `model` exported into a copy of the template
    in `workdir`, on `runtime` (fastest, auto or a runtime's name)."""
    if repository is not None:
        yield repository.resolve()
        return
    repo = copy_repository(REPOSITORY_TEMPLATE, workdir / "triton_models")
    say(f"exporting an untrained {model} intent model (speed does not depend on training)")
    tiny = model == "tiny"
    if runtime == AUTO:
        say(f"runtime: the fastest that passes the quality bar on {HELD_OUT_USERS} held-out "
            "simulated users' sessions")
        ensure_model(repo, tiny=tiny, runtime=AUTO,
                     held_out=held_out_sessions(HELD_OUT_USERS, seed=505))
    else:
        version = ensure_model(repo, tiny=tiny)
        if runtime == FASTEST:
            runtime = fastest_in_process(repo / INTENT_BERT / str(version) / "artifacts", version)
        force_runtime(repo, version, runtime)
    expose_network_outputs(repo)
    with_cascade(repo)
    yield repo


@contextlib.contextmanager
def serving(workdir: Path, *, repository: Path | None, model: str,
            runtime: str) -> Iterator[tuple[ServedModel, Path, TritonServer]]:
    """The bench's model served: its repository (`served_repository`), what it serves, and
    a tritonserver on it, stopped on the way out."""
    with served_repository(workdir, repository=repository, model=model,
                           runtime=runtime) as repo, \
            TritonServer(repo, log_path=workdir / "tritonserver.log") as triton:
        yield served_model(repo), repo, triton


@contextlib.contextmanager
def tiny_server(workdir: Path) -> Iterator[TritonServer]:
    """A tritonserver on the tiny model (~1 ms a batch): the pipeline without the model's cost."""
    repo = copy_repository(REPOSITORY_TEMPLATE, workdir / "triton_tiny")
    ensure_model(repo, tiny=True)
    expose_network_outputs(repo)
    with_cascade(repo)
    with TritonServer(repo, log_path=workdir / "tritonserver-tiny.log") as server:
        yield server


def with_cascade(repo: Path) -> None:
    """The served version's cascade: its network's prototypes and the committed policy
    (bench/cascade_heads.py), as a version `intentstream train` wrote would have them."""
    version = repository.versions(repo / INTENT_BERT)[-1]
    policy = write_cascade_heads(repo, version, repo / INTENT_BERT / str(version) / "artifacts")
    say(f"cascade for v{version}: prototypes of its network on simulated sessions, policy "
        f"{policy.to_json()}")


def fastest_in_process(artifacts: Path, version: int) -> str:
    """The runtime that scores held-out session texts fastest here, in batches of 32 (speed
    only: see the module's docstring)."""
    write_onnx_files(IntentBert.load(artifacts), artifacts, version)
    texts = held_out_sessions(RUNTIME_CHOICE_USERS, seed=505).texts
    speeds = runtime_speeds(artifacts, texts, QUALITY_BATCH, available_runtimes())
    best = fastest(speeds)
    say(f"runtimes in process on {len(texts)} held-out texts, interleaved: " + ", ".join(
        f"{name} {speed.texts_per_s:.1f}/s" for name, speed in speeds.items()) + f" -> {best}")
    return best


def force_runtime(repo: Path, version: int, name: str) -> None:
    """Serve `name` whatever the bar says, through the deployment's config.pbtxt parameter:
    untrained weights give the bar nothing to judge (every runtime flips their near-ties)."""
    say(f"runtime {name}, set in the bench's config.pbtxt (no quality bar on untrained weights)")
    artifacts = repo / INTENT_BERT / str(version) / "artifacts"
    onnx_file = RUNTIMES[name].onnx_file
    if onnx_file and not (artifacts / onnx_file).is_file():
        write_onnx_files(IntentBert.load(artifacts), artifacts, version)
    path = repo / INTENT_BERT / "config.pbtxt"
    config = read_config(path)
    set_runtime(config, name, where=path)
    if RUNTIMES[name].gpu:
        # One instance owns the GPU (two would also build one TensorRT engine cache at once);
        # the worker asks how many there are and then sends one request per chunk.
        one_instance_instead_of_two(config, name, where=path)
    write_config(path, config)


# The ensemble's tensors the network hands the stacker -> their names as ensemble outputs.
NETWORK_TENSORS = {"text_strength": ("TEXT_STRENGTH", 3),
                   "text_intent_type": ("TEXT_INTENT_TYPE", 6), "text_churn": ("TEXT_CHURN", 1)}


def expose_network_outputs(repo: Path) -> None:
    """The bench's ensemble also returns the network's outputs, so the worker keeps them and
    a silence re-score of an unchanged text runs the stacker alone (docs/silence.md). A no-op
    once the committed ensemble declares them; a given --repository is served as it is."""
    path = repo / ENSEMBLE / "config.pbtxt"
    config = read_config(path)
    if set(NETWORK_OUTPUTS) <= {o.name for o in config.output}:
        return
    for step in config.ensemble_scheduling.step:
        for mapping in (step.input_map, step.output_map):
            for key, tensor in list(mapping.items()):  # not while it is being written
                if tensor in NETWORK_TENSORS:
                    mapping[key] = NETWORK_TENSORS[tensor][0]
    for name, width in NETWORK_TENSORS.values():
        config.output.add(name=name, data_type=DataType.TYPE_FP32, dims=[width])
    write_config(path, config)


def set_runtime(config: ModelConfig, name: str, *, where: Path) -> None:
    """Set the empty `runtime` parameter to `name`; one already set is refused, not kept."""
    if "runtime" not in config.parameters or config.parameters["runtime"].string_value:
        raise BenchError(f"{where} has no empty runtime parameter to set")
    config.parameters["runtime"].string_value = name


def one_instance_instead_of_two(config: ModelConfig, runtime: str, *, where: Path) -> None:
    """Shrink the template's one group of two CPU instances to one, to serve `runtime`."""
    groups = config.instance_group
    if len(groups) != 1 or groups[0].kind != ModelInstanceGroup.KIND_CPU \
            or groups[0].count != 2:
        raise BenchError(f"{where} has no two-instance CPU group to serve {runtime} on one")
    groups[0].count = 1


def read_config(path: Path) -> ModelConfig:
    """A model's config.pbtxt (Triton's text protobuf) as a message; comments are dropped."""
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), ModelConfig())
    except text_format.ParseError as error:
        raise BenchError(f"{path} is not a Triton model config: {error}") from None


def write_config(path: Path, config: ModelConfig) -> None:
    text = text_format.MessageToString(config, message_formatter=_parameter_on_one_line)
    path.write_text(f"# Written by intentstream bench (bench/serving.py).\n{text}",
                    encoding="utf-8")


_PARAMETER_ENTRY = ModelConfig.DESCRIPTOR.fields_by_name["parameters"].message_type


def _parameter_on_one_line(message: Message, indent: int, as_one_line: bool) -> str | None:
    """A `parameters` entry as `key: "k", value: { string_value: "v" }`, the template's layout,
    since inference.model.runtimes.served_runtime finds the runtime parameter by a regex over
    that layout; every other message in text_format's own."""
    if message.DESCRIPTOR is not _PARAMETER_ENTRY:
        return None
    key = text_encoding.CEscape(message.key, as_utf8=True)
    value = text_format.MessageToString(message.value, as_one_line=True)
    return f'key: "{key}", value: {{ {value} }}'
