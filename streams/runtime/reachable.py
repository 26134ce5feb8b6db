"""Is anything listening? A TCP check before a command talks Kafka, so a broker that is not
running is one clear line, not aiokafka's retries, log lines and an unclosed-client warning.

Only a connect: it does not prove a Kafka broker answers (TLS, SASL and the protocol come
later, in the client), only that something accepts connections at one of the addresses.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence


class Unreachable(ConnectionError):
    """Nothing accepts connections at any of the addresses; the message says where and why."""


def host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); raises ValueError without a port."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def require_listening(addresses: Sequence[str], what: str, hint: str = "",
                      timeout_s: float = 2.0) -> None:
    """Return if one of `addresses` accepts a TCP connection, else raise `Unreachable`:
    "no {what} answers at {address} ({its error}); {hint}"."""
    errors = []
    for address in addresses:
        try:
            with socket.create_connection(host_port(address), timeout=timeout_s):
                return
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            errors.append(f"{address} ({reason.lower()})")
    where = ", ".join(errors) or "no address given"
    raise Unreachable(f"no {what} answers at {where}" + (f"; {hint}" if hint else ""))
