"""PII scrubbing and keyed pseudonyms (streams/core/privacy.py), and TLS for the Triton client."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.client import TritonScorer
from streams.core.privacy import (
    PLACEHOLDERS,
    PrivacyPolicy,
    protect_raw,
    pseudonymise,
    pseudonymise_raw,
    scrub_bytes,
    scrub_text,
)

KEY = b"marketing-key-1"

# --- examples: what is masked ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+shop@example.co.uk please", "mail me at [email] please"),
        ("JOHN_SMITH@Mail.Example.ORG.", "[email]."),
        ("card 4111 1111 1111 1111 exp 12/27", "card [card] exp 12/27"),
        ("card 4111-1111-1111-1111.", "card [card]."),
        ("4222 2222 2222 2 is my old visa", "[card] is my old visa"),
        ("amex 3782 822463 10005", "amex [card]"),
        ("paid with 5500005555555559!", "paid with [card]!"),
        ("call +1 (555) 123-4567 today", "call [phone] today"),
        ("+44 20 7946 0958 / +49 171 1234567", "[phone] / [phone]"),
        ("+4915112345678", "[phone]"),
        ("+33 1 23 45 67 89", "[phone]"),
        ("555-123-4567, (555) 123-4567, 555.123.4567", "[phone], [phone], [phone]"),
        ("030 1234567 or 0171/1234567", "[phone] or [phone]"),
        ("01 23 45 67 89", "[phone]"),
        ("(030) 1234567", "[phone]"),
        ("call me at 5551234567", "call me at [phone]"),
        ("my phone number: 01711234567", "my phone number: [phone]"),
        ("send to 42 Elm St, Apt 4B please", "send to [address] please"),
        ("1600 Pennsylvania Avenue NW", "[address] NW"),
        ("221B Baker Street, London", "[address], London"),
        ("12 Martin Luther King Jr Blvd.", "[address]"),
        ("ship to 9 main street", "ship to [address]"),
        ("1 The Close, Suite 200", "[address]"),
        ("Hauptstraße 12, Berlin", "[address], Berlin"),
        ("Berliner Str. 5a", "[address]"),
        ("Königsallee 3 bitte", "[address] bitte"),
        ("Berliner Strasse 17", "[address]"),
    ],
)
def test_pii_is_replaced_by_its_placeholder(text: str, expected: str) -> None:
    assert scrub_text(text) == expected
    assert scrub_bytes(text.encode()) == expected.encode()


# --- examples: what survives -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2 for the road",
        "5 min drive",
        "2 way street",
        "10 minute walk to the store",
        "order 1234567890 arrived 2024-01-05",
        "order #40012345678 (11 digits)",
        "item 0012345678 is missing",
        "paid 129.99 for 2 pairs, total $1,299.00",
        "price 1 299,00 EUR, quantity 12 500",
        "sku-1234-XL size 10.5",
        "Garmin Forerunner 265 (watches, 449.00)",
        "delivered on 05.03.2024 at 14:30, or 01/02/2024",
        "in 2023 I bought 3 items, 4 stars",
        "version 2.0, 3 x 250 ml",
        "Nike Court Vision size 10",
        "Salomon Speedcross 6 trail running shoes",
        "Osprey Talon 22 daypack 20l",
        "ref AB-2024-001234, ticket 88231",
        "p-0123456789012345678901234567abcd",
        "call me at 5 pm",
    ],
)
def test_shop_text_survives(text: str) -> None:
    assert scrub_text(text) == text
    assert scrub_bytes(text.encode()) == text.encode()


def test_broken_utf8_survives_byte_for_byte_around_the_pii() -> None:
    raw = (b'{"text": "\xff\xfe jane@example.com \xc3 4111 1111 1111 1111 '
           b'K\xc3\xb6nigsallee 3 \x80"}')
    assert scrub_bytes(raw) == b'{"text": "\xff\xfe [email] \xc3 [card] [address] \x80"}'


def test_pii_right_before_a_broken_byte_is_still_masked() -> None:
    raw = b"jane@example.com\xff 4111 1111 1111 1111\xfe +44 20 7946 0958\x80 12 Elm St\xc3"
    assert scrub_bytes(raw) == b"[email]\xff [card]\xfe [phone]\x80 [address]\xc3"


def test_adversarial_input_is_scrubbed_in_linear_time() -> None:
    worst = ["1 " * 8000, "a@" * 8000, "0" * 16000, "1-" * 8000, "12 Ab " * 2500,
             "phone " + "1 " * 8000, "x." * 8000, "Straße " * 2000]
    started = time.perf_counter()
    for text in worst:
        scrub_text(text)
        scrub_bytes(text.encode())
    assert time.perf_counter() - started < 5


# --- properties: planted PII never survives ------------------------------------------------------

_digit = st.sampled_from("0123456789")


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.lists(_digit, min_size=n, max_size=n).map("".join)


def _joined(parts: list[str], seps: list[str]) -> str:
    return "".join(p + s for p, s in zip(parts, [*seps, ""], strict=True))


emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.from_regex(r"[a-z][a-z0-9._%+-]{0,15}[a-z0-9]", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True),
    st.from_regex(r"[a-zA-Z]{2,6}", fullmatch=True),
)


@st.composite
def cards(draw: st.DrawFn) -> str:
    number = draw(st.integers(13, 19).flatmap(_digits))
    style = draw(st.sampled_from(["", " ", "-", "amex"]))
    if style == "amex" and len(number) == 15:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    if style in ("", "amex"):
        return number
    return style.join(number[i : i + 4] for i in range(0, len(number), 4))


@st.composite
def phones(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["intl", "nanp", "local", "fr"]))
    sep = draw(st.sampled_from([" ", "-", "."]))
    if kind == "intl":
        country = str(draw(st.integers(1, 999)))
        groups = draw(st.lists(st.integers(2, 4).flatmap(_digits), min_size=3, max_size=4)
                      .filter(lambda g: len("".join(g)) >= 7))
        joined = draw(st.sampled_from([sep, ""])).join(groups)
        return f"+{country} {joined}"
    if kind == "nanp":
        area = str(draw(st.integers(200, 999)))
        exchange, line = draw(_digits(3)), draw(_digits(4))
        if draw(st.booleans()):
            return f"({area}) {exchange}-{line}"
        return sep.join([area, exchange, line])
    if kind == "local":
        area = "0" + draw(st.integers(2, 4).flatmap(_digits))  # 8+ digits with the trunk 0
        local = draw(st.integers(5, 8).flatmap(_digits))
        return f"{area}{draw(st.sampled_from([' ', '-', '/']))}{local}"
    return "0" + draw(_digits(1)) + "".join(" " + draw(_digits(2)) for _ in range(4))


_STOP = re.compile(r"(for|to|of|on|in|at|by|and|or|as|is|it|me|my|am|pm|x|km|mi|way|are|was|"
                   r"you|our|per|off|out|min|day|pcs|usd|eur|gbp)$", re.IGNORECASE)
name_words = st.from_regex(r"[A-Z][a-z]{2,10}", fullmatch=True).filter(
    lambda w: not _STOP.match(w))


@st.composite
def addresses(draw: st.DrawFn) -> str:
    number = str(draw(st.integers(1, 9999))) + draw(st.sampled_from(["", "", "B", "a"]))
    if draw(st.integers(0, 3)) == 0:  # German: number after the street
        street = draw(name_words)
        form = draw(st.sampled_from(["{}straße", "{}strasse", "{}str.", "{} Straße", "{}allee",
                                     "{}weg", "{}gasse"]))
        return f"{form.format(street)} {number}"
    words = draw(st.lists(name_words, min_size=1, max_size=3))
    suffix = draw(st.sampled_from(["Street", "St", "St.", "Avenue", "Ave", "Road", "Rd",
                                   "Boulevard", "Blvd", "Lane", "Drive", "Way", "Court",
                                   "Place", "Terrace", "road", "STREET"]))
    unit = draw(st.sampled_from(["", ", Apt 4B", " Suite 200", " #12", ", Unit 3"]))
    return f"{number} {' '.join(words)} {suffix}{unit}"


FLUFF = [
    "hi", "hello", "please", "my", "order", "the", "shoes", "are", "too", "small", "send",
    "refund", "to", "new", "address", "call", "me", "on", "email", "is", "thanks", "jacket",
    "arrived", "late", "where", "can", "I", "you", "reach", "at", "tent", "Salomon", "trail",
    "running", "size", "wide", "blue", "Garmin", "watch", "Osprey", "daypack", "camping", "stove",
]
fluff = st.lists(st.sampled_from(FLUFF), max_size=8).map(" ".join)
left_seps = st.sampled_from([" ", "\n", ": ", " (", "\t", ", ", " - "])
right_seps = st.sampled_from([" ", ". ", ", ", ") ", "! ", "\n", "? "])
pii = st.one_of(
    emails.map(lambda s: ("[email]", s)),
    cards().map(lambda s: ("[card]", s)),
    phones().map(lambda s: ("[phone]", s)),
    addresses().map(lambda s: ("[address]", s)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted=st.lists(pii, min_size=1, max_size=4),
       before=st.lists(fluff.filter(bool), min_size=5, max_size=5),
       seps=st.lists(st.tuples(left_seps, right_seps), min_size=4, max_size=4))
def test_planted_pii_never_survives(planted, before, seps) -> None:
    """PII among words, at random places; two numbers are never run together (that is
    ambiguous for any scrubber: `+1 555 0100 4111...` could be one number or two)."""
    text = before[-1]
    for (_, value), fill, (left, right) in zip(planted, before, seps, strict=False):
        text += f"{fill}{left}{value}{right}"
    out = scrub_text(text)
    for _, value in planted:
        assert value not in out
    # Each is masked as what it is, or (a 13-digit local phone) as a card: masked all the same.
    assert sum(out.count(p) for p in PLACEHOLDERS) >= len(planted)
    assert {p for p, _ in planted} - {"[phone]"} <= {p for p in PLACEHOLDERS if p in out}
    # Nothing of the PII is left: the fluff has no digits and no '@'.
    assert not re.search(r"[0-9@]", out), out
    assert scrub_bytes(text.encode()) == out.encode()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200))
def test_scrubbing_is_idempotent(text: str) -> None:
    once = scrub_text(text)
    assert scrub_text(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_bytes_and_text_scrub_ascii_alike(text: str) -> None:
    assert scrub_bytes(text.encode()) == scrub_text(text).encode()


CATALOG = ["Salomon Speedcross 6", "Garmin Forerunner 265", "Osprey Talon 22",
           "Black Diamond Spot 400", "MSR PocketRocket 2", "Patagonia Nano Puff",
           "Nike Court Vision Low", "Brooks Ghost 15 Road Running Shoe"]
shop_sentences = st.one_of(
    st.sampled_from(CATALOG),
    st.builds("{} for {:.2f}".format, st.sampled_from(CATALOG),
              st.floats(0, 100_000, allow_nan=False)),
    st.builds("order {} has {} items".format, st.integers(0, 10**12 - 1), st.integers(1, 99)),
    st.builds("order #{}".format, st.integers(0, 10**12 - 1)),
    st.builds("sku-{}-{}".format, st.integers(0, 99999), st.sampled_from(["XL", "M", "42"])),
    st.builds("bought {} in {}".format, st.integers(1, 20), st.integers(1990, 2099)),
    st.builds("delivered {:02d}.{:02d}.{}".format, st.integers(1, 28), st.integers(1, 12),
              st.integers(2000, 2099)),
    st.builds("{}-{:02d}-{:02d}".format, st.integers(2000, 2099), st.integers(1, 12),
              st.integers(1, 28)),
    st.builds("size {} wide, {} stars".format, st.integers(3, 50), st.integers(1, 5)),
    st.builds("{} x {} ml".format, st.integers(1, 12), st.integers(50, 1000)),
    st.builds("${:,.2f} total".format, st.floats(0, 10**7, allow_nan=False)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(shop_sentences, min_size=1, max_size=5).map(", ".join))
def test_typical_shop_text_is_left_alone(text: str) -> None:
    assert scrub_text(text) == text


# --- pseudonyms ----------------------------------------------------------------------------------

user_ids = st.text(min_size=1, max_size=64)


def test_pseudonym_is_hmac_sha256_with_a_prefix() -> None:
    import hashlib
    import hmac

    expected = "p-" + hmac.new(KEY, b"alice-42", hashlib.sha256).hexdigest()[:32]
    assert pseudonymise("alice-42", KEY) == expected
    assert re.fullmatch(r"p-[0-9a-f]{32}", expected)


@given(user=user_ids, other=user_ids, key=st.binary(min_size=1, max_size=64),
       other_key=st.binary(min_size=1, max_size=64))
def test_pseudonyms_are_stable_key_dependent_and_differ_per_user(user, other, key, other_key):
    assert pseudonymise(user, key) == pseudonymise(user, key)
    assert (pseudonymise(user, key) == pseudonymise(other, key)) == (user == other)
    assert (pseudonymise(user, key) == pseudonymise(user, other_key)) == (key == other_key)
    assert user not in pseudonymise(user, key)[2:] or len(user) < 4


@given(user=user_ids, key=st.binary(min_size=1, max_size=32), text=fluff)
def test_pseudonyms_survive_scrubbing(user, key, text) -> None:
    pseudonym = pseudonymise(user, key)
    assert scrub_text(f"{text} {pseudonym}, {pseudonym}") == f"{text} {pseudonym}, {pseudonym}"
    raw = f'{{"user_id":"{pseudonym}"}}'.encode()
    assert scrub_bytes(raw) == raw


def test_raw_user_ids_are_pseudonymised_even_in_broken_json() -> None:
    raw = b'{"user_id" : "  bob\\u0040shop ", "x": [1, {"user_id":"carol"}], oops \xff'
    out = pseudonymise_raw(raw, KEY)
    assert out == (b'{"user_id" : "' + pseudonymise("bob@shop", KEY).encode()
                   + b'", "x": [1, {"user_id":"' + pseudonymise("carol", KEY).encode()
                   + b'"}], oops \xff')


def test_protect_raw_pseudonymises_before_scrubbing() -> None:
    raw = b'{"user_id": "alice@example.com", "text": "call 555-123-4567"}'
    both = protect_raw(raw, PrivacyPolicy(scrub_pii=True, pseudonym_key=KEY))
    pid = pseudonymise("alice@example.com", KEY).encode()
    assert both == b'{"user_id": "' + pid + b'", "text": "call [phone]"}'
    assert protect_raw(raw, PrivacyPolicy(scrub_pii=False)) == raw
    assert b"[email]" in protect_raw(raw, PrivacyPolicy(scrub_pii=True))


def test_placeholders_are_the_documented_four() -> None:
    assert {"[email]", "[phone]", "[card]", "[address]"} == PLACEHOLDERS


# --- transport security: TLS to Triton ---------------------------------------------------------


def _built_clients(monkeypatch) -> tuple[list[dict], list[dict]]:
    """Record what TritonScorer passes to tritonclient and grpc; the real objects are built."""
    import grpc
    from tritonclient.grpc import aio as grpcaio

    clients: list[dict] = []
    credentials: list[dict] = []
    real_client, real_creds = grpcaio.InferenceServerClient, grpc.ssl_channel_credentials

    def client(url: str, **kwargs):
        clients.append({"url": url, **kwargs})
        return real_client(url, **kwargs)

    def creds(**kwargs):
        credentials.append(kwargs)
        return real_creds(**kwargs)

    monkeypatch.setattr(grpcaio, "InferenceServerClient", client)
    monkeypatch.setattr(grpc, "ssl_channel_credentials", creds)
    return clients, credentials


def _connect(scorer: TritonScorer) -> None:
    async def connect() -> None:
        scorer._connection()  # the lazy client, as the first request would build it
        await scorer.close()

    asyncio.run(connect())


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_scorer_builds_its_grpc_client_with_the_tls_arguments(monkeypatch, mutual) -> None:
    import grpc

    clients, credentials = _built_clients(monkeypatch)
    tls = {"root_certificates": b"-----BEGIN CERTIFICATE-----\nroot\n",
           "private_key": b"key" if mutual else None,
           "certificate_chain": b"chain" if mutual else None}
    _connect(TritonScorer("triton.internal:8001", ssl=True, **tls))
    # The PEM bytes become channel credentials (tritonclient's own ssl arguments are paths).
    assert credentials == [tls]
    assert len(clients) == 1 and clients[0]["url"] == "triton.internal:8001"
    assert isinstance(clients[0]["creds"], grpc.ChannelCredentials)


def test_plaintext_scorer_passes_no_tls_arguments(monkeypatch) -> None:
    clients, credentials = _built_clients(monkeypatch)
    _connect(TritonScorer("127.0.0.1:8001"))
    assert clients == [{"url": "127.0.0.1:8001"}] and credentials == []


def test_settings_tls_arguments_fit_the_scorer(monkeypatch, tmp_path) -> None:
    from streams.settings import Settings

    for name in ("ca", "key", "chain"):
        (tmp_path / f"{name}.pem").write_bytes(name.encode())
    settings_ = Settings(triton_ssl=True, triton_ssl_root_certs=tmp_path / "ca.pem",
                         triton_ssl_private_key=tmp_path / "key.pem",
                         triton_ssl_cert_chain=tmp_path / "chain.pem")
    clients, credentials = _built_clients(monkeypatch)
    _connect(TritonScorer("h:1", **settings_.triton_client_kwargs()))
    assert credentials == [{"root_certificates": b"ca", "private_key": b"key",
                            "certificate_chain": b"chain"}]
    assert len(clients) == 1


@pytest.mark.parametrize("run", ["ü" * 100_000, ("🛒" * 25_000).encode(), ("ü" * 50_000).encode()])
def test_a_long_run_of_non_ascii_word_characters_scrubs_in_linear_time(run) -> None:
    """A lookbehind narrower than the word class after it retried every position of such a
    run: 40 KB of emoji in a dead letter took ~100 s and starved the worker's consumer. Now
    100,000 characters take milliseconds; the bound is for the quadratic case (minutes)."""
    scrub = scrub_bytes if isinstance(run, bytes) else scrub_text
    started = time.perf_counter()
    assert scrub(run + (b" mail a@b.de" if isinstance(run, bytes) else " mail a@b.de")).endswith(
        b"[email]" if isinstance(run, bytes) else "[email]")
    assert time.perf_counter() - started < 5
