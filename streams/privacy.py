"""Privacy at the door: PII scrubbing and keyed pseudonyms, applied as events are parsed.

(Work in progress: the policy object is wired through parsing; scrubbing lands next.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    scrub_pii: bool = True  # replace e-mails, phones, card numbers, addresses in free text
    pseudonym_key: bytes | None = None  # when set, user ids become keyed hashes (HMAC)


DEFAULT_PRIVACY = PrivacyPolicy()
