"""Property-based: whatever bytes arrive, parsing never raises; bad input always gets a reason.

The end-to-end counterpart (the real worker staying up under malformed traffic) is in
tests/e2e/test_slice.py; this one explores the input space far more widely, in memory.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import EVENT_TYPES, Rejection, ShopEvent, parse_event

MAX = 16_384
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
FIELDS = ["event_id", "user_id", "ts", "type", "item", "query", "text", "rating", "page",
          "duration_s"]


@st.composite
def mutated_events(draw) -> tuple[bytes, bytes | None]:
    """A valid event with some fields dropped, retyped or blown up, as raw bytes."""
    doc: dict = {"event_id": "e1", "user_id": "u1", "ts": 1_767_225_600_000,
                 "type": draw(st.sampled_from(EVENT_TYPES)), "query": "q", "text": "t",
                 "item": {"id": "i1", "price": 1.0}}
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        action = draw(st.sampled_from(["drop", "junk", "huge"]))
        if action == "drop":
            doc.pop(name, None)
        elif action == "junk":
            doc[name] = draw(json_values)
        else:
            doc[name] = "x" * draw(st.integers(1_000, 40_000))
    key = draw(st.sampled_from([b"u1", None, b"other"]))
    return json.dumps(doc).encode(), key  # stdlib: also big ints and NaN, which orjson refuses


raw_garbage = st.binary(max_size=300) | st.text(max_size=300).map(str.encode)


@settings(max_examples=6_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_events())
def test_mutated_events_are_parsed_or_rejected_with_a_reason(case):
    raw, key = case
    result = parse_event(raw, key, MAX)
    if isinstance(result, Rejection):
        assert result.reason and result.detail
    else:
        assert isinstance(result, ShopEvent) and key == result.user_id.encode()


@settings(max_examples=4_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw_garbage, st.sampled_from([b"u1", None]))
def test_arbitrary_bytes_never_raise(raw, key):
    result = parse_event(raw, key, MAX)
    assert isinstance(result, Rejection | ShopEvent)
    if isinstance(result, Rejection):
        assert result.reason
