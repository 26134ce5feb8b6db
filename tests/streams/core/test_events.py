import orjson
import pytest

from streams.core.events import Rejection, ShopEvent, parse_event
from streams.core.privacy import PrivacyPolicy, pseudonymise

MAX = 16_384


def raw(**fields) -> bytes:
    doc = {"event_id": "e1", "user_id": "u1", "ts": 1_700_000_000_000, "type": "view",
           "item": {"id": "sku-1", "title": "Trail shoe", "category": "shoes", "price": 129.99}}
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def test_valid_view_is_parsed_with_event_time_in_ms():
    event = parse_event(raw(), b"u1", MAX)
    assert isinstance(event, ShopEvent)
    assert event.ts == 1_700_000_000_000 and event.item.price == 129.99


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
        ("2024-01-01T00:00:00", 1_704_067_200_000),  # no zone: UTC, never local time
        (1_704_067_200_000, 1_704_067_200_000),
    ],
)
def test_event_time_accepts_epoch_ms_and_iso8601(ts, expected_ms):
    event = parse_event(raw(ts=ts), b"u1", MAX)
    assert isinstance(event, ShopEvent) and event.ts == expected_ms


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b"", b"u1", "empty"),
        (None, b"u1", "empty"),
        (b"{not json", b"u1", "not_json"),
        (b"\xff\xfe\x00garbage", b"u1", "not_json"),
        (b"[1, 2]", b"u1", "not_object"),
        (b'"just a string"', b"u1", "not_object"),
        (raw(type="teleport"), b"u1", "unknown_type"),
        (raw(user_id=...), b"u1", "missing_field"),
        (raw(event_id=...), b"u1", "missing_field"),
        (raw(user_id=42), b"u1", "invalid_field"),
        (raw(ts=1_700_000_000), b"u1", "bad_timestamp"),  # seconds, not ms
        (raw(ts="yesterday"), b"u1", "bad_timestamp"),
        (raw(ts=True), b"u1", "bad_timestamp"),
        (raw(item={"id": "x", "price": "12.50"}), b"u1", "invalid_field"),
        (raw(item={"id": "x", "price": -1}), b"u1", "invalid_field"),
        (raw(item=None), b"u1", "missing_field"),  # a view needs an item
        (raw(type="search", item=None), b"u1", "missing_field"),  # a search needs a query
        (raw(type="support_message", text="   "), b"u1", "missing_field"),
        (raw(query="x" * 501, type="search"), b"u1", "invalid_field"),
        (raw(), None, "key_mismatch"),
        (raw(), b"someone-else", "key_mismatch"),
        (raw(text="x" * 20_000), b"u1", "too_large"),
    ],
)
def test_invalid_input_is_rejected_with_a_reason(value, key, reason):
    result = parse_event(value, key, MAX)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_deeply_nested_junk_is_rejected_not_raised():
    nested = b"[" * 5000 + b"]" * 5000
    assert isinstance(parse_event(nested, b"u1", 1_000_000), Rejection)


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    event = parse_event(raw(campaign="black-friday"), b"u1", MAX)
    assert isinstance(event, ShopEvent)


# --- privacy at the door (streams/core/privacy.py) ------------------------------------------------

KEY = b"k1"
PII_TEXT = "I'm jane@example.com, +44 20 7946 0958, card 4111 1111 1111 1111, 12 Elm St"
SCRUBBED = "I'm [email], [phone], card [card], [address]"


@pytest.mark.parametrize(
    ("fields", "read"),
    [
        ({"type": "support_message", "text": PII_TEXT}, lambda e: e.text),
        ({"type": "review", "text": PII_TEXT, "rating": 2}, lambda e: e.text),
        ({"type": "search", "query": PII_TEXT}, lambda e: e.query),
        ({"item": {"id": "sku-1", "title": PII_TEXT}}, lambda e: e.item.title),
        ({"item": {"id": "sku-1", "category": PII_TEXT[:100]}}, lambda e: e.item.category),
        ({"item": None, "page": "contact jane@example.com"}, lambda e: e.page),
    ],
)
def test_every_free_text_field_is_scrubbed(fields, read):
    event = parse_event(raw(**fields), b"u1", MAX)
    assert isinstance(event, ShopEvent)
    assert "jane@example.com" not in read(event) and "[email]" in read(event)
    assert "4111" not in event.model_dump_json()


def test_scrubbed_text_keeps_what_is_not_pii():
    event = parse_event(raw(type="support_message", text=PII_TEXT + " re order 1234567890"),
                        b"u1", MAX)
    assert event.text == SCRUBBED + " re order 1234567890"
    assert event.user_id == "u1" and event.item.price == 129.99


def test_scrubbing_can_be_turned_off():
    off = PrivacyPolicy(scrub_pii=False)
    event = parse_event(raw(type="support_message", text=PII_TEXT), b"u1", MAX, off)
    assert event.text == PII_TEXT


def test_user_id_becomes_its_pseudonym_after_the_key_check():
    policy = PrivacyPolicy(pseudonym_key=KEY)
    event = parse_event(raw(user_id=" u1 "), b"u1", MAX, policy)  # ids are stripped first
    assert isinstance(event, ShopEvent) and event.user_id == pseudonymise("u1", KEY)
    # The key check compares the raw key with the raw id: a pseudonymised key is a mismatch.
    assert parse_event(raw(), pseudonymise("u1", KEY).encode(), MAX, policy).reason == (
        "key_mismatch")
    assert parse_event(raw(), b"u1", MAX, PrivacyPolicy(pseudonym_key=b"k2")).user_id != (
        event.user_id)
