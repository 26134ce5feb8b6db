"""Property-based: whatever bytes arrive, parsing never raises; bad input always gets a reason.

The end-to-end counterpart (≥ 10,000 malformed events through the real worker, which stays
up and dead-letters each one) is tests/e2e/test_fuzz.py; this one explores the input space far
more widely, in memory. Strategies live in tests/strategies.py, shared by both.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.events import Rejection, ShopEvent, parse_event
from tests.strategies import MAX_EVENT_BYTES, malformed_events, mutated_events, raw_garbage


@settings(max_examples=6_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_events())
def test_mutated_events_are_parsed_or_rejected_with_a_reason(case):
    raw, key = case
    result = parse_event(raw, key, MAX_EVENT_BYTES)
    if isinstance(result, Rejection):
        assert result.reason and result.detail
    else:
        assert isinstance(result, ShopEvent) and key == result.user_id.encode()


@settings(max_examples=4_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw_garbage, st.sampled_from([b"u1", None]))
def test_arbitrary_bytes_never_raise(raw, key):
    result = parse_event(raw, key, MAX_EVENT_BYTES)
    assert isinstance(result, Rejection | ShopEvent)
    if isinstance(result, Rejection):
        assert result.reason


@settings(max_examples=3_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(malformed_events())
def test_malformed_events_are_always_rejected_with_a_reason(case):
    # The e2e fuzz test counts on this: each of these must end in the DLQ.
    raw, key = case
    result = parse_event(raw, key, MAX_EVENT_BYTES)
    assert isinstance(result, Rejection), (raw[:300], key)
    assert result.reason and result.detail
