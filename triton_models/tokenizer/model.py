"""Triton python backend: TEXT (bytes) → INPUT_IDS, ATTENTION_MASK (int64, right-padded).

The canonical copy lives at triton_models/tokenizer/model.py; export copies it into
<version>/model.py next to <version>/artifacts/ (the shared MiniLM tokenizer files).
Self-contained: the stub process cannot rely on the `inference` package being importable.
Truncation is on the left, as in inference/model/tokenizer.py, so the newest events are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.max_length = int(config["parameters"]["max_length"]["string_value"])
        artifacts = Path(args["model_repository"]) / args["model_version"] / "artifacts"
        self.tokenizer = AutoTokenizer.from_pretrained(artifacts, truncation_side="left")

    def execute(self, requests: list[Any]) -> list[Any]:
        # Tokenize every request of the batch in one call, then give each its own rows.
        texts_per_request = [_texts(request) for request in requests]
        encoded = self.tokenizer(
            [text for texts in texts_per_request for text in texts],
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            return_token_type_ids=False,
            return_tensors="np",
        )
        ids = encoded["input_ids"].astype(np.int64)
        mask = encoded["attention_mask"].astype(np.int64)
        responses = []
        start = 0
        for texts in texts_per_request:
            rows = slice(start, start + len(texts))
            start += len(texts)
            width = int(mask[rows].sum(axis=1).max())  # this request's longest text
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("INPUT_IDS", np.ascontiguousarray(ids[rows, :width])),
                        pb_utils.Tensor("ATTENTION_MASK", np.ascontiguousarray(mask[rows, :width])),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        self.tokenizer = None


def _texts(request: Any) -> list[str]:
    """The request's [batch, 1] TEXT column as str; bad UTF-8 is replaced, never fatal."""
    column = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
    return [
        value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        for value in column
    ]
