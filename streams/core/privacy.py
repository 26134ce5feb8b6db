"""Privacy at the door: PII scrubbing and keyed pseudonyms, applied as events are parsed.

`streams.core.events.parse_event` scrubs every free-text field and (with a key) replaces the user
id before anything else sees the event, so session state, its changelog, the text sent to
Triton, every output topic and the feedback store only ever hold the scrubbed text and the
pseudonym. Dead letters get the byte-level variant (`scrub_bytes`, `pseudonymise_raw`), which
leaves broken UTF-8 as it is. What is and is not covered: docs/privacy.md.

The patterns aim at precision as much as recall: prices, quantities, years, dates, SKUs and
numbers under 13 digits without phone-like grouping survive. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import AnyStr

import orjson


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    scrub_pii: bool = True  # replace e-mails, phones, card numbers, addresses in free text
    pseudonym_key: bytes | None = None  # when set, user ids become keyed hashes (HMAC)


DEFAULT_PRIVACY = PrivacyPolicy()

PSEUDONYM_PREFIX = "p-"
PSEUDONYM_HEX_CHARS = 32  # 128 bits of HMAC-SHA256: collisions are out of reach


def pseudonymise(user_id: str, key: bytes) -> str:
    """Keyed, stable pseudonym of a user id: `p-` + the first 32 hex digits of
    HMAC-SHA256(key, user_id as UTF-8). Whoever holds the key can compute it for a known user;
    without the key it cannot be reversed or recomputed."""
    digest = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_CHARS]


# --- patterns -----------------------------------------------------------------------------------
# Written once as str patterns and compiled for str (parsed events) and bytes (dead letters).
# Inside a match every `\w` sits in a character class, so the bytes variant can add the UTF-8
# lead and continuation bytes (\x80-\xff) to it: non-ASCII letters belong to names there. The
# boundaries around a match are ASCII only, so a stray byte after a match (broken UTF-8) never
# stops it from matching. A match never starts right after a letter, digit or '-': besides not
# cutting numbers out of ids, that keeps pseudonyms (`p-` + hex) intact when dead letters are
# scrubbed after them.

_START = r"(?<![0-9A-Za-z_@+./-])"  # not inside a word, number, e-mail or id
_END = r"(?![0-9A-Za-z_@])"

# A lookbehind in front of a repeated word class names that class (`\w`, not `0-9A-Za-z_`):
# otherwise a long run of other word characters (non-ASCII letters; in bytes any \x80-\xff,
# such as 40 KB of emoji) is retried from every position inside it, quadratic in its length
# (a 40 KB dead letter took ~100 s to scrub and starved the consumer).
_EMAIL = (
    r"(?<![\w.%+'-])(?P<pii>[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,})"
    r"(?![0-9A-Za-z_-])"
)
# 13-19 digits as cards are written: a group of 4, then up to 5 more (or one contiguous run);
# not the epoch-ms event time of a dead letter's raw JSON (`"ts": 1767225600000`).
_CARD = (
    _START + r'(?<!"ts":)(?<!"ts": )'
    + r"(?P<pii>[0-9]{4}(?:[ -]?[0-9]{1,8}){1,5})(?![0-9A-Za-z_]|[.,][0-9])"
)
_PHONE_INTL = (
    _START + r"(?P<pii>\+[0-9]{1,3}(?:[ .-]{0,2}(?:\([0-9]{1,4}\)|[0-9]{1,6})){1,6})" + _END
)
_PHONE_NANP = _START + r"(?P<pii>\(?[2-9][0-9]{2}\)?[ .-]?[0-9]{3}[ .-][0-9]{4})" + _END
# A trunk prefix (0) and separators: 030 1234567, (0)171 1234567, 01 23 45 67 89, 06-12345678.
_PHONE_LOCAL = _START + r"(?P<pii>\(?0[0-9]{1,4}\)?(?:[ ./-]{1,2}[0-9]{2,8}){1,5})" + _END
# Any digits after a phone cue word ("call me at 5551234567"); the cue itself is kept.
_PHONE_CUE = (
    r"(?<![0-9A-Za-z_])(?:phone|telephone|tel|mobile|cell|fax|whatsapp|sms|"
    r"(?:call|text|ring|reach) me)[ \t]*(?:no\.?|number|nr\.?)?[ \t]*(?:at|on|is|:|=|-|#)?[ \t]*"
    r"(?P<pii>\+?[0-9][0-9 ().-]{5,22}[0-9])" + _END
)
_STREET_TYPES = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|court|ct|place|pl|"
    r"terrace|terr|ter|circle|cir|highway|hwy|parkway|pkwy|square|sq|crescent|cres|close|"
    r"trail|trl|row|alley|plaza|mews|grove"
)
# Words that follow a number in shop text without being a street name ("2 for the road").
_NOT_STREET_NAME = (
    r"(?:for|to|of|on|in|at|by|and|or|with|from|via|as|is|are|was|it|this|that|me|you|my|"
    r"your|our|am|pm|x|min|mins|minutes?|hours?|hrs?|days?|weeks?|months?|years?|km|mi|miles?|"
    r"items?|pairs?|pcs|pieces?|times?|stars?|percent|euros?|dollars?|usd|eur|gbp|more|less|"
    r"other|each|per|off|out|way)\b"
)
_UNIT = (
    r"(?:,?[ \t]*(?:apt|apartment|unit|suite|ste|flat|floor|fl|room|rm|#)\.?[ \t]*#?[\w-]{1,6})?"
)
_ADDRESS = (
    _START + r"(?P<pii>[0-9]{1,6}[a-z]?(?:[-/][0-9]{1,4}[a-z]?)?[ \t]+"
    r"(?:(?!" + _NOT_STREET_NAME + r")[a-z][\w'.-]*[ \t]+){1,4}?"
    r"(?:" + _STREET_TYPES + r")\b\.?" + _UNIT + r")"
)
# German forms, number after the street: Hauptstraße 12, Berliner Str. 5a, Königsallee 3.
_HOUSE_NO = r"[ \t]*[0-9]{1,4}[a-z]?(?:[-/][0-9]{1,4})?(?![0-9A-Za-z_])"
_ADDRESS_DE = (
    r"(?<![\w-])(?P<pii>(?:[\w-]+[ \t]+(?:straße|strasse|str\.)|"
    r"[\w-]{2,}(?:straße|strasse|str\.|allee|gasse|platz|weg))" + _HOUSE_NO + r")"
)


def _digits(text: str | bytes) -> int:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return sum(48 <= b <= 57 for b in data)


def _groups(text: str | bytes) -> list[int]:
    """Lengths of the digit groups, e.g. `01.02.2024` -> [2, 2, 4]."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return [len(g) for g in re.findall(rb"[0-9]+", data)]


def _is_card(span: str | bytes) -> bool:
    # Longer runs are masked too: better an over-masked tracking number than a leaked card.
    return _digits(span) >= 13


def _is_phone(span: str | bytes) -> bool:
    return _digits(span) >= 7


def _is_local_phone(span: str | bytes) -> bool:
    groups = _groups(span)
    is_date = groups in ([2, 2, 4], [4, 2, 2], [2, 2, 2])
    return sum(groups) >= 8 and not is_date


@dataclass(frozen=True, slots=True)
class _Rule:
    placeholder: str
    pattern: str
    accept: Callable[[str | bytes], bool] | None = None


# Order matters: e-mails first (they hold digits); `+` numbers, then cards (13+ digits) before
# the other phone forms; addresses last, so a house number is never taken for part of a phone.
RULES: tuple[_Rule, ...] = (
    _Rule("[email]", _EMAIL),
    _Rule("[phone]", _PHONE_INTL, _is_phone),
    _Rule("[card]", _CARD, _is_card),
    _Rule("[phone]", _PHONE_NANP),
    _Rule("[phone]", _PHONE_LOCAL, _is_local_phone),
    _Rule("[phone]", _PHONE_CUE, _is_phone),
    _Rule("[address]", _ADDRESS),
    _Rule("[address]", _ADDRESS_DE),
)
PLACEHOLDERS = frozenset(rule.placeholder for rule in RULES)

_FLAGS = re.IGNORECASE
_STR_RULES = [(re.compile(r.pattern, _FLAGS), r.placeholder, r.accept) for r in RULES]
_BYTES_RULES = [
    (re.compile(r.pattern.replace(r"\w", r"\w\x80-\xff").encode(), _FLAGS),
     r.placeholder.encode(), r.accept)
    for r in RULES
]


def _masker(
    placeholder: AnyStr, accept: Callable[[str | bytes], bool] | None
) -> Callable[[re.Match[AnyStr]], AnyStr]:
    def mask(match: re.Match[AnyStr]) -> AnyStr:
        span = match.group("pii")
        if accept is not None and not accept(span):
            return match.group(0)
        whole, offset = match.group(0), match.start()
        start, end = match.start("pii") - offset, match.end("pii") - offset
        return whole[:start] + placeholder + whole[end:]  # keeps a cue word ("phone: ")

    return mask


def scrub_text(text: str) -> str:
    """`text` with e-mails, phone numbers, card-like numbers and street addresses replaced
    by `[email]`, `[phone]`, `[card]`, `[address]`."""
    for pattern, placeholder, accept in _STR_RULES:
        text = pattern.sub(_masker(placeholder, accept), text)
    return text


def scrub_bytes(raw: bytes) -> bytes:
    """`scrub_text` on raw bytes: the same rules, and anything else (broken UTF-8 included)
    left byte for byte as it was."""
    for pattern, placeholder, accept in _BYTES_RULES:
        raw = pattern.sub(_masker(placeholder, accept), raw)
    return raw


# `"user_id": "<JSON string>"` anywhere in raw bytes, parsable JSON or not.
_RAW_USER_ID = re.compile(rb'("user_id"[ \t\r\n]*:[ \t\r\n]*")((?:[^"\\]|\\.)*)(")')


def _json_string(body: bytes) -> str:
    try:
        value = orjson.loads(b'"' + body + b'"')
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
    return value if isinstance(value, str) else body.decode("utf-8", "replace")


def pseudonymise_raw(raw: bytes, key: bytes) -> bytes:
    """Raw event bytes with every `user_id` string value replaced by its pseudonym (stripped
    first, as `parse_event` strips ids, so it is the pseudonym a valid event would get)."""

    def replace(match: re.Match[bytes]) -> bytes:
        pseudonym = pseudonymise(_json_string(match.group(2)).strip(), key)
        return match.group(1) + pseudonym.encode() + match.group(3)

    return _RAW_USER_ID.sub(replace, raw)


def protect_raw(raw: bytes, privacy: PrivacyPolicy) -> bytes:
    """A rejected message's bytes as the policy lets them leave the worker. Pseudonyms go in
    before scrubbing: an e-mail used as a user id still becomes its pseudonym, not `[email]`."""
    if privacy.pseudonym_key is not None:
        raw = pseudonymise_raw(raw, privacy.pseudonym_key)
    if privacy.scrub_pii:
        raw = scrub_bytes(raw)
    return raw


def protects_raw(privacy: PrivacyPolicy) -> bool:
    return privacy.scrub_pii or privacy.pseudonym_key is not None
