"""Hypothesis strategies for malformed shop events, shared by the in-memory fuzz test
(tests/streams/test_events_fuzz.py) and the end-to-end one through the real worker
(tests/e2e/test_fuzz.py).

`mutated_events` and `raw_garbage` explore freely (some draws are still valid events);
`malformed_events` is malformed by construction: every draw must be rejected by
`streams.core.events.parse_event`, which the in-memory test checks, so the end-to-end test can
count on each one landing in the DLQ.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from streams.core.events import EVENT_TYPES

MAX_EVENT_BYTES = 16_384  # the worker's default `max_event_bytes`
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
FIELDS = ["event_id", "user_id", "ts", "type", "item", "query", "text", "rating", "page",
          "duration_s"]
REQUIRED = ["event_id", "user_id", "ts", "type"]
Case = tuple[bytes, bytes | None]  # (raw value, message key)


def base_event(kind: str, user: str = "u1", event_id: str = "e1") -> dict[str, Any]:
    """A complete valid event of any type (every type's needed fields present)."""
    return {"event_id": event_id, "user_id": user, "ts": T0, "type": kind, "query": "q",
            "text": "t", "item": {"id": "i1", "price": 1.0}}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # stdlib: also big ints and NaN, which orjson refuses


@st.composite
def mutated_events(draw) -> Case:
    """A valid event with some fields dropped, retyped or blown up, as raw bytes."""
    doc = base_event(draw(st.sampled_from(EVENT_TYPES)))
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        action = draw(st.sampled_from(["drop", "junk", "huge"]))
        if action == "drop":
            doc.pop(name, None)
        elif action == "junk":
            doc[name] = draw(json_values)
        else:
            doc[name] = "x" * draw(st.integers(1_000, 40_000))
    key = draw(st.sampled_from([b"u1", None, b"other"]))
    return dumps(doc), key


raw_garbage = st.binary(max_size=300) | st.text(max_size=300).map(str.encode)

# --- malformed by construction --------------------------------------------------------------

not_a_string = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(
    json_scalars, max_size=3) | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
blank_ids = st.text(alphabet=" \t\n\r", max_size=5)  # ids are stripped, then must be non-empty
bad_ts = (
    st.none() | st.booleans() | st.lists(st.integers(), max_size=2) | st.dictionaries(
        st.text(max_size=3), st.integers(), max_size=2)
    | st.integers(max_value=946_684_800_000 - 1)  # before 2000: seconds, not ms
    | st.integers(min_value=4_102_444_800_000)  # after 2100
    | st.sampled_from(["", "yesterday", "2026-13-45T99:00:00", "1767225600000", "NaN", "1e12"])
    | st.floats(allow_nan=True).filter(lambda f: not (f == f and f.is_integer()))
)


@st.composite
def wrong_types(draw) -> dict[str, Any]:
    """A required field of the wrong type (ids not strings, ts not a time, type unknown)."""
    doc = base_event(draw(st.sampled_from(EVENT_TYPES)))
    name = draw(st.sampled_from(REQUIRED))
    if name in ("event_id", "user_id"):
        doc[name] = draw(not_a_string | blank_ids | st.text(min_size=129, max_size=200).filter(
            lambda s: len(s.strip()) > 128))
    elif name == "ts":
        doc["ts"] = draw(bad_ts)
    else:
        doc["type"] = draw(not_a_string | st.text(max_size=20).filter(
            lambda s: s not in EVENT_TYPES))
    return doc


@st.composite
def missing_keys(draw) -> dict[str, Any]:
    """A required field, or the field the event's type needs, left out (or null)."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    doc = base_event(kind)
    needed = {"search": ["query"], "support_message": ["text"], "review": ["text"]}.get(
        kind, ["item"])
    name = draw(st.sampled_from(REQUIRED + needed))
    if draw(st.booleans()):
        del doc[name]
    else:
        doc[name] = None
    if name == "item":
        doc.pop("page", None)  # an item type is complete with a page instead
    return doc


@st.composite
def nested_junk(draw) -> Any:
    """Not an event object at top level, or a required field buried in nested junk."""
    doc = base_event(draw(st.sampled_from(EVENT_TYPES)))
    shape = draw(st.sampled_from(["list", "scalar", "wrapped", "buried"]))
    if shape == "list":
        return [doc, *draw(st.lists(json_values, max_size=3))]
    if shape == "scalar":
        return draw(json_scalars)
    if shape == "wrapped":
        return {"event": doc, "junk": draw(json_values)}
    name = draw(st.sampled_from(REQUIRED))
    doc[name] = {"value": doc[name], "junk": draw(json_values)}
    return doc


@st.composite
def huge_fields(draw) -> dict[str, Any]:
    """Over the byte limit by up to 30 %: one field blown up with ASCII or escaped unicode."""
    doc = base_event(draw(st.sampled_from(EVENT_TYPES)))
    size = draw(st.integers(MAX_EVENT_BYTES, int(MAX_EVENT_BYTES * 1.3)))
    char = draw(st.sampled_from("xé€🛒"))
    escaped = len(json.dumps(char)) - 2  # 🛒 is written as a 12-byte surrogate pair
    doc[draw(st.sampled_from([*FIELDS, "extra"]))] = char * (size // escaped + 1)
    return doc


@st.composite
def broken_utf8(draw) -> bytes:
    """A valid event's bytes with invalid UTF-8 spliced into a string value."""
    raw = dumps(base_event(draw(st.sampled_from(EVENT_TYPES))))
    bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
                                b"\xc0\xaf", b"\x80\x80", b"\xf8\x88\x80\x80\x80"]))
    marker = draw(st.sampled_from([b'"e1"', b'"u1"', b'"q"', b'"t"', b'"i1"']))
    at = raw.index(marker) + 1 + draw(st.integers(0, 1))
    return raw[:at] + bad + raw[at:]


def _with_junk_extras(draw, doc: Any) -> Any:
    """Optional extra keys of junk: never turns a malformed event into a valid one."""
    if isinstance(doc, dict) and draw(st.booleans()):
        doc[draw(st.sampled_from(["meta", "props", "ctx"]))] = draw(json_values)
    return doc


@st.composite
def malformed_events(draw) -> Case:
    """An event that must be dead-lettered: wrong types, huge fields, broken UTF-8,
    nested junk, missing keys, a key that is not its user, or raw garbage."""
    kind = draw(st.sampled_from(["wrong_type", "missing", "nested", "huge", "utf8",
                                 "key", "garbage"]))
    key = draw(st.sampled_from([b"u1", None, b"other"]))
    if kind == "garbage":
        return draw(raw_garbage), key
    if kind == "utf8":
        return draw(broken_utf8()), key
    if kind == "key":  # complete, but keyed to another user's partition (or not keyed)
        return dumps(base_event(draw(st.sampled_from(EVENT_TYPES)))), draw(
            st.sampled_from([None, b"other", b"u1 ", b"U1"]))
    strategy = {"wrong_type": wrong_types(), "missing": missing_keys(),
                "nested": nested_junk(), "huge": huge_fields()}[kind]
    return dumps(_with_junk_extras(draw, draw(strategy))), key
