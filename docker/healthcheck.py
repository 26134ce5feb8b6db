"""Container health check of the worker and sidecar images: is this process making progress?

It asks the process's own `/health` (beside `/metrics`, streams/runtime/metrics.py): unhealthy
when consumer lag is above 0 and no micro-batch has completed for `STALL_S`, which is what a
TCP probe cannot see: a worker that runs but is stuck (a stalled partition, Kafka or Triton
unreachable while it retries with backoff, by design never dropping a batch), or a process
that no longer answers. A crash exits non-zero and the engine restarts it anyway.

With the metrics endpoint off (port 0) there is no /health; the check then falls back to
opening a TCP connection to every bootstrap server and to Triton's gRPC port.

    python /opt/intentstream/healthcheck.py [--feedback] [--no-triton]   exit 0 healthy, 1 not
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from streams.runtime.metrics import probe_health
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


def reachability(settings: Settings, *, triton: bool, timeout_s: float) -> int:
    failed = unreachable(endpoints(settings, triton=triton), timeout_s)
    if failed:
        print("unreachable: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", action="store_true",
                        help="check the feedback sidecar (its metrics port) instead of a worker")
    # The sidecar image's HEALTHCHECK passes --no-triton (the sidecar needs no Triton), so it
    # also means "the sidecar" until that image passes --feedback.
    parser.add_argument("--no-triton", action="store_true",
                        help="the sidecar: its metrics port; fallback check the broker only")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per request")
    args = parser.parse_args(argv)
    settings = Settings()
    sidecar = args.feedback or args.no_triton
    port = settings.feedback_metrics_port if sidecar else settings.metrics_port
    if port <= 0:
        return reachability(settings, triton=not sidecar, timeout_s=args.timeout)
    ok, line = probe_health(port, timeout_s=args.timeout)
    print(f"{'healthy' if ok else 'unhealthy'}: {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
