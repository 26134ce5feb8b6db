"""The inference tests' fixtures (tokenizer, tiny model, a repository copy, one tritonserver)."""

from tests.inference.conftest import (  # noqa: F401 (fixtures)
    repo,
    tiny_model,
    tokenizer,
    triton_server,
)
