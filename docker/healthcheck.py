"""Container health check of the worker and sidecar images: can this process reach its services?

Faust's web server is off (`Settings.faust_settings`), so there is no HTTP liveness endpoint. A
worker that crashes exits non-zero and the engine restarts it; what the engine cannot see is a
worker that runs but cannot reach Kafka or Triton and is stalling with backoff (by design: it
never drops a batch). This reports that, from the same settings the worker reads, by opening a
TCP connection to every bootstrap server and to Triton's gRPC port.

    python /opt/intentstream/healthcheck.py [--no-triton]     exit 0 healthy, 1 not
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from streams.runtime.topics import bootstrap_servers
from streams.settings import Settings


def host_port(address: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `host` or `[v6]:port` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port, or only the colons of a bare IPv6 address
        host, port = address, str(default_port)
    return host.strip("[]"), int(port)


def endpoints(settings: Settings, *, triton: bool) -> list[tuple[str, int]]:
    found = [host_port(server, 9092) for server in bootstrap_servers(settings.broker_url)]
    if triton:
        found.append(host_port(settings.triton_url, 8001))
    return found


def unreachable(targets: Sequence[tuple[str, int]], timeout_s: float) -> list[str]:
    failed = []
    for host, port in targets:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as error:
            failed.append(f"{host}:{port} ({error})")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-triton", action="store_true", help="check the broker only")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per connection")
    args = parser.parse_args(argv)
    failed = unreachable(endpoints(Settings(), triton=not args.no_triton), args.timeout)
    if failed:
        print("unreachable: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
