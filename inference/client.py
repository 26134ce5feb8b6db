"""Async scorer for the stream workers: texts in, per-text head probabilities out.

It talks gRPC to the `intent` ensemble (tokenizer → intent_bert), so no tokenizer or torch
runs in the worker. A call splits its texts into requests of at most `max_batch` and sends them
concurrently, which lets Triton's dynamic batcher merge them with other workers' requests.
Any failure surfaces as one `ScoringError`; its `transient` flag tells the caller whether the
server could not answer (unreachable, timed out, model not loaded: back off and retry) or
answered about these texts (the model rejected the request, or its outputs have a wrong shape
or non-finite numbers: narrow it down, a retry of the same texts will likely fail again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as grpcaio
from tritonclient.utils import InferenceServerException

from .heads import INTENT_TYPE_LABELS, STRENGTH_LABELS, Prediction, label_probabilities
from .repository import ENSEMBLE, INTENT_BERT

OUTPUTS = ("STRENGTH", "INTENT_TYPE", "CHURN", "MODEL_VERSION")


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


class TritonScorer:
    """Scores texts through a Triton server's ensemble; create and use it on one event loop."""

    def __init__(
        self,
        url: str,
        model_name: str = ENSEMBLE,
        max_batch: int = 32,
        timeout_s: float = 60.0,
        *,
        ssl: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        """TLS: PEM bytes (None: the system roots, no client certificate), as
        `Settings.triton_client_kwargs()` produces them from the settings."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.url = url  # host:port of Triton's gRPC endpoint
        self.model_name = model_name
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.tls = TlsConfig(ssl, root_certificates, private_key, certificate_chain)
        self._client: grpcaio.InferenceServerClient | None = None
        self._takes_features: bool | None = None  # read from the served model's metadata

    def _connection(self) -> grpcaio.InferenceServerClient:
        # Created lazily, inside the running event loop that grpc.aio binds it to.
        if self._client is None:
            self._client = grpcaio.InferenceServerClient(self.url, **self.tls.client_kwargs())
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
        # Chunks of similar length: a batch is padded to its longest text, so mixing a 10-token
        # session with a 128-token one wastes most of the short one's compute (on CPU, batch 32
        # in arrival order was slower per text than batch 1).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [order[start : start + self.max_batch]
                  for start in range(0, len(order), self.max_batch)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._score_chunk(
                    [texts[i] for i in chunk],
                    None if features is None else [features[i] for i in chunk]))
                    for chunk in chunks]
        except* ScoringError as failures:
            raise failures.exceptions[0] from None  # one error type for the caller, not a group
        predictions: list[Prediction | None] = [None] * len(texts)
        for i, prediction in zip(order, (p for task in tasks for p in task.result()),
                                 strict=True):
            predictions[i] = prediction
        return predictions  # type: ignore[return-value]  # every slot was filled

    async def takes_features(self) -> bool:
        """Whether the served model declares a FEATURES input (asked once)."""
        if self._takes_features is None:
            try:
                metadata = await self._connection().get_model_metadata(
                    self.model_name, as_json=True, client_timeout=self.timeout_s)
            except InferenceServerException as error:
                raise ScoringError(f"{self.model_name} at {self.url}: {error.message()}",
                                   transient=True) from error
            self._takes_features = any(i["name"] == "FEATURES" for i in metadata["inputs"])
        return self._takes_features

    async def _score_chunk(
        self, texts: Sequence[str], features: Sequence[Sequence[float]] | None
    ) -> list[Prediction]:
        column = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        text_input = grpcclient.InferInput("TEXT", list(column.shape), "BYTES")
        text_input.set_data_from_numpy(column)
        inputs = [text_input]
        if features is not None:
            rows = np.asarray(features, dtype=np.float32)
            feature_input = grpcclient.InferInput("FEATURES", list(rows.shape), "FP32")
            feature_input.set_data_from_numpy(rows)
            inputs.append(feature_input)
        try:
            result = await self._connection().infer(
                self.model_name,
                inputs,
                outputs=[grpcclient.InferRequestedOutput(name) for name in OUTPUTS],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as error:
            status = error.status()
            raise ScoringError(
                f"{self.model_name} at {self.url}: {status}: {error.message()}",
                transient=status is None or status in TRANSIENT_STATUSES,
            ) from error
        return predictions_from_outputs(
            {name: result.as_numpy(name) for name in OUTPUTS}, len(texts)
        )

    async def served_max_batch(self) -> int:
        """The ensemble's `max_batch_size` as Triton serves it; ScoringError if unreachable."""
        try:
            config = await self._connection().get_model_config(
                self.model_name, as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            raise ScoringError(f"{self.model_name} at {self.url}: {error.message()}") from error
        return int(config["config"].get("max_batch_size", 0))

    async def ready(self) -> bool:
        """Whether the server answers and the model is loaded."""
        try:
            return bool(
                await self._connection().is_model_ready(
                    self.model_name, client_timeout=self.timeout_s
                )
            )
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


def predictions_from_outputs(outputs: dict[str, np.ndarray | None], rows: int) -> list[Prediction]:
    """Turn the ensemble's output arrays into Predictions; ScoringError if any is malformed."""
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
    return [
        Prediction(
            strength=label_probabilities(STRENGTH_LABELS, strength[row]),
            intent_type=label_probabilities(INTENT_TYPE_LABELS, intent_type[row]),
            churn=float(churn[row, 0]),
            model_name=INTENT_BERT,
            model_version=int(versions[row, 0]),
        )
        for row in range(rows)
    ]
