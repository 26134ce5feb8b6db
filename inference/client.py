"""Async scorer for the stream workers: texts in, per-text head probabilities out.

It talks gRPC to the `intent` ensemble (tokenizer → intent_bert → stacker), so no tokenizer or
torch runs in the worker. Where the ensemble declares the network's own outputs (TEXT_STRENGTH,
TEXT_INTENT_TYPE, TEXT_CHURN), each prediction carries them (`ScoredText.network`), so a caller
can keep them and later re-score the same text with new FEATURES through the ensemble's last
step alone (`score_stacked`: the `stacker` model, no tokenizer, no network).

A call splits its texts into requests of at most `max_batch`, and into at
least as many requests as the served model has instances (`concurrency`), and sends them at
once: on CPU two single-threaded instances scoring half a batch each beat one instance with two
threads, whose threads wait on each other whenever the broker or the worker takes a core.
With several Triton replicas (a headless Service's addresses, or `host1:port,host2:port`) the
requests go round robin over them (`inference/replicas.py`), a failed one retried on the next.
Any failure surfaces as one `ScoringError`; its `transient` flag tells the caller whether the
server could not answer (unreachable, timed out, model not loaded: back off and retry) or
answered about these texts (the model rejected the request, or its outputs have a wrong shape
or non-finite numbers: narrow it down, a retry of the same texts will likely fail again).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .heads import (
    CUSTOMER_VALUE_FIELDS,
    INTENT_TYPE_LABELS,
    STRENGTH_LABELS,
    Prediction,
    label_probabilities,
)
from .replicas import ReplicaSet
from .repository import ENSEMBLE, INTENT_BERT, STACKER

OUTPUTS = ("STRENGTH", "INTENT_TYPE", "CHURN", "MODEL_VERSION")
# Optional: requested only where the served model declares them (an older ensemble does not);
# a row without a customer value model, FEATURES or an order answers -1 there.
VALUE_OUTPUTS = ("P_ALIVE", "EXPECTED_ORDERS", "EXPECTED_VALUE")
# Optional too: the network's probabilities as the stacker got them, where the ensemble
# exposes them (the stacker's TEXT_* inputs; MODEL_VERSION is the network's version).
NETWORK_OUTPUTS = ("TEXT_STRENGTH", "TEXT_INTENT_TYPE", "TEXT_CHURN")


# gRPC status codes that say the server could not answer now, not that the input is bad. An
# unloaded model (a rollout) answers NOT_FOUND; a model that raised on a request, INTERNAL.
TRANSIENT_STATUSES = frozenset({
    "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND",
    "StatusCode.CANCELLED", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.UNKNOWN",
})


class ScoringError(Exception):
    """Triton could not score a batch; `transient`: the server, not the texts, is the cause."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """gRPC over TLS to Triton; with a private key and certificate chain, mutual TLS."""

    ssl: bool = False
    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """For `InferenceServerClient`: credentials built from the PEM bytes (its own `ssl`
        arguments take file paths instead)."""
        if not self.ssl:
            return {}
        return {"creds": grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )}


@dataclass(frozen=True, slots=True)
class NetworkOutputs:
    """What the text network gave for one text: the stacker's TEXT_* inputs, exactly (float32
    values, which a float and JSON keep exactly), and the intent_bert version."""

    strength: tuple[float, ...]
    intent_type: tuple[float, ...]
    churn: float
    version: int


@dataclass(frozen=True, slots=True)
class ScoredText(Prediction):
    """A Prediction with the network outputs it was stacked from (None: not exposed)."""

    network: NetworkOutputs | None = None
    # The cascade's cheap stage (`score_stacked` with `cascade`): a WANTED_* code of
    # streams.core.cascade, non-zero where the network must answer this row after all.
    wanted: int = 0


def _no_request(model: str) -> None:
    return None


class TritonScorer:
    """Scores texts through a Triton server's ensemble; create and use it on one event loop."""

    def __init__(
        self,
        url: str,
        model_name: str = ENSEMBLE,
        max_batch: int = 32,
        timeout_s: float = 60.0,
        *,
        concurrency: int = 0,
        refresh_s: float = 30.0,
        ssl: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        """TLS: PEM bytes (None: the system roots, no client certificate), as
        `Settings.triton_client_kwargs()` produces them from the settings. `concurrency`: the
        fewest requests a call is split into; 0 asks the server for the served instances (on
        every replica). `refresh_s`: seconds between resolutions of `url` to its replicas."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if concurrency < 0:
            raise ValueError(f"concurrency must be >= 0, got {concurrency}")
        self.url = url  # host:port of Triton's gRPC endpoint(s), comma-separated for several
        self.model_name = model_name
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.tls = TlsConfig(ssl, root_certificates, private_key, certificate_chain)
        self._client: ReplicaSet | None = None
        self._takes_features: bool | None = None  # read from the served model's metadata
        self._outputs: tuple[str, ...] | None = None  # OUTPUTS + the VALUE_OUTPUTS it declares
        self._concurrency = concurrency  # 0: the served instances on every replica
        self._instances: int | None = None  # per server: read from the served config once
        self.stacker_name = STACKER
        self._stacker_outputs: tuple[str, ...] | None = None
        self._network_version: tuple[float, int | None] = (float("-inf"), None)  # (read, v)
        # Called with the model's name once per inference request sent (metrics).
        self.on_request: Callable[[str], None] = _no_request

    def _connection(self) -> ReplicaSet:
        # Created lazily, inside the running event loop that grpc.aio binds its channels to.
        if self._client is None:
            self._client = ReplicaSet(self.url, self.tls.client_kwargs(),
                                      refresh_s=self.refresh_s)
            self._client.connect()
        return self._client

    async def score(
        self, texts: Sequence[str], features: Sequence[Sequence[float]] | None = None
    ) -> list[Prediction]:
        """One Prediction per text, in input order. `features`: one FEATURES row per text,
        sent when the served model takes them (a text-only model is scored on text alone)."""
        if not texts:
            return []
        if features is not None and len(features) != len(texts):
            raise ValueError(f"{len(features)} feature rows for {len(texts)} texts")
        if features is not None and not await self.takes_features():
            features = None
        chunks = length_chunks([len(t) for t in texts], self.max_batch,
                               await self.concurrency())
        return await in_parallel(chunks, lambda chunk: self._score_chunk(
            [texts[i] for i in chunk],
            None if features is None else [features[i] for i in chunk]))

    async def takes_features(self) -> bool:
        """Whether the served model declares a FEATURES input (asked once)."""
        if self._takes_features is None:
            await self._read_metadata()
        return bool(self._takes_features)

    async def outputs(self) -> tuple[str, ...]:
        """The outputs a call requests: OUTPUTS and the customer value ones it declares."""
        if self._outputs is None:
            await self._read_metadata()
        return self._outputs or OUTPUTS

    async def _read_metadata(self) -> None:
        try:
            metadata = await self._connection().call(lambda client: client.get_model_metadata(
                self.model_name, as_json=True, client_timeout=self.timeout_s))
        except InferenceServerException as error:
            raise ScoringError(f"{self.model_name} at {self.url}: {error.message()}",
                               transient=True) from error
        self._takes_features = any(i["name"] == "FEATURES" for i in metadata["inputs"])
        declared = {o["name"] for o in metadata.get("outputs", [])}
        self._outputs = OUTPUTS + tuple(name for name in VALUE_OUTPUTS + NETWORK_OUTPUTS
                                        if name in declared)

    async def exposes_network(self) -> bool:
        """Whether the served ensemble gives the network's own outputs (so they can be kept)."""
        return set(NETWORK_OUTPUTS) <= set(await self.outputs())

    async def network_version(self) -> int | None:
        """The intent_bert version served now (the newest ready one; asked at most every
        `refresh_s`): kept network outputs of another version are not reused."""
        read_at, version = self._network_version
        if time.monotonic() - read_at < self.refresh_s:
            return version
        metadata = await self._ask(INTENT_BERT, lambda client: client.get_model_metadata(
            INTENT_BERT, as_json=True, client_timeout=self.timeout_s))
        versions = [int(v) for v in metadata.get("versions", [])]
        version = max(versions) if versions else None
        self._network_version = (time.monotonic(), version)
        return version

    async def score_stacked(
        self, network: Sequence[NetworkOutputs], features: Sequence[Sequence[float]],
        cascade: Sequence[tuple[int, int, int]] | None = None,
    ) -> list[Prediction]:
        """The ensemble's answer for texts whose network outputs are already known: the
        `stacker` model alone, with those outputs and a FEATURES row each. One request per
        chunk (at most `max_batch` rows, spread over the replicas), the same ScoringError
        semantics as `score`. `cascade`: per row (mode, events since the kept run, kinds_mask), the
        cascade's cheap stage (streams/core/cascade.py; `cascades()` says whether the served
        stacker takes it): each ScoredText then says whether the network is `wanted`."""
        if not network:
            return []
        if len(features) != len(network):
            raise ValueError(f"{len(features)} feature rows for {len(network)} rows")
        if cascade is not None and len(cascade) != len(network):
            raise ValueError(f"{len(cascade)} cascade rows for {len(network)} rows")
        parts = max(1, len(self._connection()))
        chunks = length_chunks([1] * len(network), self.max_batch, parts)
        return await in_parallel(chunks, lambda chunk: self._stack_chunk(
            [network[i] for i in chunk], [features[i] for i in chunk],
            None if cascade is None else [cascade[i] for i in chunk]))

    async def cascades(self) -> bool:
        """Whether the served stacker answers the cascade's cheap stage (stacker code 3+)."""
        return "NETWORK_WANTED" in await self._stacker_declared()

    async def _stack_chunk(self, network: Sequence[NetworkOutputs],
                           features: Sequence[Sequence[float]],
                           cascade: Sequence[tuple[int, int, int]] | None = None,
                           ) -> list[Prediction]:
        columns = {
            "FEATURES": np.asarray(features, dtype=np.float32),
            "TEXT_STRENGTH": np.asarray([n.strength for n in network], dtype=np.float32),
            "TEXT_INTENT_TYPE": np.asarray([n.intent_type for n in network], dtype=np.float32),
            "TEXT_CHURN": np.asarray([[n.churn] for n in network], dtype=np.float32),
            "TEXT_MODEL_VERSION": np.asarray([[n.version] for n in network], dtype=np.int64),
        }
        outputs = await self._stacker_declared()
        if cascade is not None:
            columns["CASCADE"] = np.asarray(cascade, dtype=np.int64).reshape(len(network), 3)
        else:
            outputs = tuple(name for name in outputs if name != "NETWORK_WANTED")
        inputs = []
        for name, array in columns.items():
            tensor = grpcclient.InferInput(name, list(array.shape),
                                           "INT64" if array.dtype == np.int64 else "FP32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        arrays = await self._infer(self.stacker_name, inputs, outputs)
        return list(predictions_from_outputs(arrays, len(network)))

    async def _stacker_declared(self) -> tuple[str, ...]:
        if self._stacker_outputs is None:
            try:
                metadata = await self._connection().call(
                    lambda client: client.get_model_metadata(
                        self.stacker_name, as_json=True, client_timeout=self.timeout_s))
            except InferenceServerException as error:
                raise ScoringError(f"{self.stacker_name} at {self.url}: {error.message()}",
                                   transient=True) from error
            declared = {o["name"] for o in metadata.get("outputs", [])}
            self._stacker_outputs = OUTPUTS + tuple(n for n in (*VALUE_OUTPUTS, "NETWORK_WANTED")
                                                    if n in declared)
        return self._stacker_outputs

    async def _infer(self, model: str, inputs: list[Any],
                     outputs: Sequence[str]) -> dict[str, np.ndarray | None]:
        """One inference request; a failure as ScoringError (transient: the server's)."""
        self.on_request(model)
        try:
            result = await self._connection().call(lambda client: client.infer(
                model,
                inputs,
                outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                client_timeout=self.timeout_s,
            ))
        except InferenceServerException as error:
            status = error.status()
            raise ScoringError(
                f"{model} at {self.url}: {status}: {error.message()}",
                transient=status is None or status in TRANSIENT_STATUSES,
            ) from error
        return {name: result.as_numpy(name) for name in outputs}

    async def concurrency(self) -> int:
        """Requests a call is split into at least: as set, or the most instances any model of
        the served pipeline has (asked once; 1 when the config names none) times the replicas
        (so every instance of every replica gets a share)."""
        if self._concurrency:
            return self._concurrency
        if self._instances is None:
            config = await self._model_config(self.model_name)
            steps = [s["model_name"] for s in
                     config.get("ensemble_scheduling", {}).get("step", [])]
            configs = [await self._model_config(name) for name in steps] if steps else [config]
            self._instances = max(instance_count(c) for c in configs)
        return self._instances * max(1, len(self._connection()))

    async def _model_config(self, name: str) -> dict[str, Any]:
        answer = await self._ask(name, lambda client: client.get_model_config(
            name, as_json=True, client_timeout=self.timeout_s))
        return dict(answer["config"])

    async def _ask(self, name: str, request: Callable[[Any], Any]) -> Any:
        """A question about model `name` (metadata, config); a failure is a transient
        ScoringError naming the model and the server."""
        try:
            return await self._connection().call(request)
        except InferenceServerException as error:
            raise ScoringError(f"{name} at {self.url}: {error.message()}",
                               transient=True) from error

    async def _score_chunk(
        self, texts: Sequence[str], features: Sequence[Sequence[float]] | None
    ) -> list[ScoredText]:
        column = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        text_input = grpcclient.InferInput("TEXT", list(column.shape), "BYTES")
        text_input.set_data_from_numpy(column)
        inputs = [text_input]
        if features is not None:
            rows = np.asarray(features, dtype=np.float32)
            feature_input = grpcclient.InferInput("FEATURES", list(rows.shape), "FP32")
            feature_input.set_data_from_numpy(rows)
            inputs.append(feature_input)
        outputs = await self.outputs()
        arrays = await self._infer(self.model_name, inputs, outputs)
        return predictions_from_outputs(arrays, len(texts))

    async def served_max_batch(self) -> int:
        """The ensemble's `max_batch_size` as Triton serves it; ScoringError if unreachable."""
        config = await self._model_config(self.model_name)
        return int(config.get("max_batch_size", 0))

    async def ready(self) -> bool:
        """Whether the server answers and the model is loaded."""
        try:
            return bool(await self._connection().call(lambda client: client.is_model_ready(
                self.model_name, client_timeout=self.timeout_s)))
        except InferenceServerException:
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


async def in_parallel(
    chunks: Sequence[Sequence[int]],
    request: Callable[[Sequence[int]], Awaitable[Sequence[Prediction]]],
) -> list[Prediction]:
    """One request per chunk of row indices, all at once; the answers in row order. The
    first ScoringError is raised as itself (one error type for the caller, not a group)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(request(chunk)) for chunk in chunks]
    except* ScoringError as failures:
        raise failures.exceptions[0] from None
    predictions: list[Prediction | None] = [None] * sum(len(chunk) for chunk in chunks)
    order = (i for chunk in chunks for i in chunk)
    for i, prediction in zip(order, (p for task in tasks for p in task.result()), strict=True):
        predictions[i] = prediction
    return predictions  # type: ignore[return-value]  # every slot was filled


def length_chunks(lengths: Sequence[int], max_batch: int, concurrency: int) -> list[list[int]]:
    """Indices of the texts per request: sorted by length, cut into at least `concurrency`
    requests (never more than there are texts) of at most `max_batch`, with about the same
    number of characters each, so requests sent at once to parallel instances end together.

    Sorted, because a request is padded to its longest text: mixing a 10-token session with a
    128-token one wastes most of the short one's compute (on CPU, batch 32 in arrival order was
    slower per text than batch 1)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    if n == 0:
        return []
    parts = min(n, max(-(-n // max_batch), concurrency))
    # + 1: an empty text still costs a row. cumulative[k]: the first k texts' characters.
    cumulative = list(itertools.accumulate((lengths[i] + 1 for i in order), initial=0))
    chunks, start = [], 0
    for part in range(1, parts):
        target = cumulative[-1] * part / parts
        end = bisect.bisect_right(cumulative, target) - 1  # the last cut at or below target
        if end < n and cumulative[end + 1] - target < target - cumulative[end]:
            end += 1  # the next cut is nearer
        # Every request non-empty and within max_batch, with room left for the rest.
        left = parts - part
        end = min(max(end, start + 1, n - left * max_batch), start + max_batch, n - left)
        chunks.append(order[start:end])
        start = end
    chunks.append(order[start:])
    return chunks


def instance_count(config: dict[str, Any]) -> int:
    """Instances a model config asks for: each group's count, on each GPU it names."""
    groups = config.get("instance_group") or []
    return max(1, sum(int(g.get("count", 1)) * max(1, len(g.get("gpus") or []))
                      for g in groups))


def predictions_from_outputs(outputs: dict[str, np.ndarray | None],
                             rows: int) -> list[ScoredText]:
    """Turn the ensemble's output arrays into Predictions; ScoringError if any is malformed.
    The customer value outputs are optional: absent, or -1 in a row, give that row None; so
    are the network's (NETWORK_OUTPUTS): absent, `network` is None."""
    expected = {
        "STRENGTH": (rows, len(STRENGTH_LABELS)),
        "INTENT_TYPE": (rows, len(INTENT_TYPE_LABELS)),
        "CHURN": (rows, 1),
        "MODEL_VERSION": (rows, 1),
    }
    arrays: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = outputs.get(name)
        if array is None or array.shape != shape:
            found = None if array is None else array.shape
            raise ScoringError(f"output {name}: expected shape {shape}, got {found}",
                               transient=False)
        if name != "MODEL_VERSION" and not np.isfinite(array).all():
            raise ScoringError(f"output {name}: non-finite probabilities", transient=False)
        arrays[name] = array
    strength, intent_type = arrays["STRENGTH"], arrays["INTENT_TYPE"]
    churn, versions = arrays["CHURN"], arrays["MODEL_VERSION"]
    values = customer_values(outputs, rows)
    network = network_outputs(outputs, versions)
    wanted = outputs.get("NETWORK_WANTED")
    if wanted is not None and wanted.shape != (rows, 1):
        raise ScoringError(f"output NETWORK_WANTED: expected shape {(rows, 1)}, got "
                           f"{wanted.shape}", transient=False)
    return [
        ScoredText(
            strength=label_probabilities(STRENGTH_LABELS, strength[row]),
            intent_type=label_probabilities(INTENT_TYPE_LABELS, intent_type[row]),
            churn=float(churn[row, 0]),
            model_name=INTENT_BERT,
            model_version=int(versions[row, 0]),
            customer_value=values[row],
            network=network[row],
            wanted=0 if wanted is None else int(wanted[row, 0]),
        )
        for row in range(rows)
    ]


def network_outputs(outputs: dict[str, np.ndarray | None],
                    versions: np.ndarray) -> list[NetworkOutputs | None]:
    """Per row, the network's own outputs where the ensemble gave them (else None)."""
    rows = len(versions)
    arrays = [outputs.get(name) for name in NETWORK_OUTPUTS]
    if any(a is None for a in arrays):
        return [None] * rows
    shapes = ((rows, len(STRENGTH_LABELS)), (rows, len(INTENT_TYPE_LABELS)), (rows, 1))
    for name, array, shape in zip(NETWORK_OUTPUTS, arrays, shapes, strict=True):
        if array.shape != shape or not np.isfinite(array).all():  # type: ignore[union-attr]
            raise ScoringError(f"output {name}: expected {shape} finite values, got "
                               f"{array.shape}", transient=False)  # type: ignore[union-attr]
    strength, intent_type, churn = arrays
    return [NetworkOutputs(tuple(float(x) for x in strength[row]),  # type: ignore[index]
                           tuple(float(x) for x in intent_type[row]),  # type: ignore[index]
                           float(churn[row, 0]), int(versions[row, 0]))  # type: ignore[index]
            for row in range(rows)]


def customer_values(outputs: dict[str, np.ndarray | None],
                    rows: int) -> list[dict[str, float] | None]:
    """Per row, the customer value outputs as {p_alive, expected_orders, expected_value}; None
    where they are absent or -1 (no customer value model, no FEATURES, no order yet)."""
    arrays = [outputs.get(name) for name in VALUE_OUTPUTS]
    if any(a is None for a in arrays):
        return [None] * rows
    for name, array in zip(VALUE_OUTPUTS, arrays, strict=True):
        if array.shape != (rows, 1) or not np.isfinite(array).all():
            raise ScoringError(f"output {name}: expected {rows} finite rows of 1, got "
                               f"{array.shape}", transient=False)
    out: list[dict[str, float] | None] = []
    for row in range(rows):
        row_values = [float(a[row, 0]) for a in arrays]  # type: ignore[index]
        out.append(None if row_values[0] < 0 else
                   dict(zip(CUSTOMER_VALUE_FIELDS, row_values, strict=True)))
    return out
