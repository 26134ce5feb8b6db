"""A model repository whose `intent` ensemble also gives the network's own outputs.

The worker keeps the network's outputs with a session so that a silence re-score of the same
text runs the stacker alone (docs/silence.md); it can only keep what the ensemble returns. The
committed `triton_models/intent/config.pbtxt` is to declare them (TEXT_STRENGTH,
TEXT_INTENT_TYPE, TEXT_CHURN: the tensors the network hands the stacker); until it does, these
tests serve a copy of the template that declares them, and `expose_network` is a no-op once
the committed one does.
"""

from __future__ import annotations

from pathlib import Path

from inference.client import NETWORK_OUTPUTS
from inference.repository import copy_repository

# The ensemble's internal tensor (intent_bert's output, the stacker's input) -> its output name.
TENSORS = {"text_strength": "TEXT_STRENGTH", "text_intent_type": "TEXT_INTENT_TYPE",
           "text_churn": "TEXT_CHURN"}
DECLARED = ('  { name: "TEXT_STRENGTH", data_type: TYPE_FP32, dims: [ 3 ] },\n'
            '  { name: "TEXT_INTENT_TYPE", data_type: TYPE_FP32, dims: [ 6 ] },\n'
            '  { name: "TEXT_CHURN", data_type: TYPE_FP32, dims: [ 1 ] },\n')


def expose_network(config: str) -> str:
    """The ensemble config with the network's outputs declared (unchanged if they are)."""
    if all(f'name: "{name}"' in config for name in NETWORK_OUTPUTS):
        return config
    for tensor, name in TENSORS.items():
        config = config.replace(f'"{tensor}"', f'"{name}"')
    head, sep, tail = config.partition("output [\n")
    assert sep, "the ensemble config has no output list"
    return head + sep + DECLARED + tail


def template_exposing_network(template: Path, dest: Path) -> Path:
    """A copy of the repository template `template` at `dest`, its ensemble exposing them."""
    copy_repository(template, dest)
    config = dest / "intent" / "config.pbtxt"
    config.write_text(expose_network(config.read_text()))
    return dest
