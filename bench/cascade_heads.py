"""The cascade's half of the bench's served version (issue #27): prototypes and a policy, so the
worker's cheap stage (streams/core/cascade.py) answers as it would for a trained version.

The bench serves untrained weights (speed does not depend on training), and a version that
`intentstream train` did not write has no cascade: every cheap answer would go back to the
network (`no_policy`). So the bench writes, for the version it serves:
- prototypes: the served network's mean outputs per kinds of event (`kinds_mask`) on simulated
  sessions without free text, as training computes them on its validation windows; the model
  runs here in process on a few hundred texts (seconds on the tiny model, ~10 s on MiniLM);
- the policy `intentstream train` chose on validation (`cascade_policy.json`, beside this file,
  with the run it came from): a policy fitted against untrained outputs would say nothing about
  a trained version's bands.
The version gets no stacked heads, as before: the stacker passes the network's outputs through,
so the policy's bands see the untrained network's probabilities; the routes (what the network
must read) do not depend on the weights.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from inference.model.intent_bert import IntentBert
from inference.model.stacking import write_heads
from inference.model.tokenizer import load_tokenizer
from streams.core.cascade import CascadePolicy, free_text_digest, kinds_mask
from streams.core.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from streams.core.sessions import render
from training.data.simulator import SimConfig, simulate
from training.data.windows import worker_session_policy, worker_timer_policy, worker_windows
from training.fit.loop import predict, tokenize

POLICY_FILE = Path(__file__).with_name("cascade_policy.json")
PROTOTYPE_USERS = 120  # ~1,500 windows, of which those without free text are read
PER_KINDS = 60  # texts the network reads per kinds of event, at most
PROTOTYPE_SEED = 606  # users of their own, apart from the traffic's (101, 202, 303)


def bench_policy(path: Path = POLICY_FILE) -> CascadePolicy:
    """The committed policy (its "policy" key; the rest says where it came from)."""
    return CascadePolicy.from_json(json.loads(path.read_text(encoding="utf-8"))["policy"])


def write_cascade_heads(repo: Path, version: int, artifacts: Path,
                        policy: CascadePolicy | None = None) -> CascadePolicy:
    """Prototypes of the network in `artifacts` and `policy` (default: the committed one) for
    intent_bert `version` in `repo`'s stacker; the policy written."""
    policy = bench_policy() if policy is None else policy
    heads = {"n_features": len(FEATURE_NAMES), "feature_schema": FEATURE_SCHEMA_VERSION,
             "prototypes": prototypes(IntentBert.load(artifacts)), "cascade": policy.to_json()}
    write_heads(repo, version, heads)
    return policy


def prototypes(model: IntentBert, users: int = PROTOTYPE_USERS,
               seed: int = PROTOTYPE_SEED) -> dict[str, dict[str, Any]]:
    """str(kinds_mask) -> the network's mean outputs on simulated sessions without free text
    holding those kinds of event (at most PER_KINDS texts each)."""
    texts = texts_by_kinds(users, seed)
    tokenizer = load_tokenizer()
    out: dict[str, dict[str, Any]] = {}
    for mask, group in texts.items():
        probs = predict(model, tokenize(tokenizer, group, model.max_length))
        out[str(mask)] = {"strength": probs["strength"].mean(axis=0).tolist(),
                          "intent_type": probs["intent_type"].mean(axis=0).tolist(),
                          "churn": float(np.mean(probs["churn"]))}
    return out


def texts_by_kinds(users: int, seed: int) -> dict[int, list[str]]:
    """The worker's texts of sessions without free text, by kinds_mask, in history order."""
    session_policy, timers = worker_session_policy(), worker_timer_policy()
    out: dict[int, list[str]] = defaultdict(list)
    for history in simulate(users, SimConfig(seed=seed)):
        for window in worker_windows(history.events, session_policy, timers,
                                     history.observed_until):
            if free_text_digest(window.session):
                continue
            group = out[kinds_mask(window.session)]
            if len(group) < PER_KINDS:
                group.append(render(window.session, session_policy.max_chars))
    return dict(out)
