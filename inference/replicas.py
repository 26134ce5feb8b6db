"""Client-side round robin over Triton replicas, so several servers really share a worker's work.

gRPC keeps one HTTP/2 connection per channel, so one client behind a Kubernetes Service sends
every request to the one pod its connection landed on. A `ReplicaSet` instead resolves the
target (`host:port`, a headless Service's name, or a list `host1:port,host2:port`) to every
address, keeps one tritonclient aio client per address, and sends each request to the next
replica in turn. A replica that fails a request with UNAVAILABLE or DEADLINE_EXCEEDED (down,
refused, hung) is skipped for a back-off that doubles while it keeps failing, and the request
is retried on the next replica: one replica dying only slows a worker down. A request fails
only once every replica has failed it. The address set is resolved again every `refresh_s`
in the background: new addresses are added, vanished ones closed once their requests end.

    replicas = ReplicaSet("intentstream-triton:8001", client_kwargs)   # inside the event loop
    result = await replicas.call(lambda client: client.infer("intent", inputs))
    await replicas.close()
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.grpc import aio as grpcaio
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

T = TypeVar("T")

# The statuses that say this replica could not answer (a connection refused is UNAVAILABLE),
# not that the request was wrong: those are retried on the next replica.
REPLICA_DOWN_STATUSES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"})

GetAddrInfo = Callable[..., Sequence[tuple[Any, ...]]]
Resolver = Callable[[str, Sequence["Endpoint"]], list["Endpoint"]]
ClientFactory = Callable[..., Any]


# --- resolution (pure but for the injected getaddrinfo) ------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    """One replica: `address` is what the client connects to (an IP, or a name kept as is);
    `entry` is the target entry it came from (`host:port`)."""

    address: str
    entry: str

    @property
    def server_name(self) -> str:
        """The host the target named: TLS checks the replica's certificate against it."""
        return split_host_port(self.entry)[0]


def split_host_port(entry: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); ValueError when either part is missing."""
    host, sep, port = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"Triton target entry {entry!r} is not host:port")
    return host, int(port)


def split_target(target: str) -> list[str]:
    """The entries of `host:port` or `host1:port,host2:port`, validated, blanks dropped."""
    entries = [entry.strip() for entry in target.split(",") if entry.strip()]
    if not entries:
        raise ValueError(f"Triton target {target!r} names no host:port")
    for entry in entries:
        split_host_port(entry)
    return entries


def format_address(host: str, port: int) -> str:
    """host:port, an IPv6 address in brackets (the form grpc takes)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_literal(host: str) -> bool:
    """An IP address, or localhost: it resolves to itself (localhost's ::1 and 127.0.0.1 are
    one server, not two replicas)."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve_entry(
    entry: str, getaddrinfo: GetAddrInfo = socket.getaddrinfo
) -> list[Endpoint] | None:
    """Every address `entry`'s host resolves to, sorted; None when it does not resolve now."""
    host, port = split_host_port(entry)
    if is_literal(host):
        return [Endpoint(format_address(host, port), entry)]
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    addresses = {format_address(str(info[4][0]), port) for info in infos}
    return [Endpoint(address, entry) for address in sorted(addresses)] or None


def resolve(
    target: str, previous: Sequence[Endpoint] = (), getaddrinfo: GetAddrInfo = socket.getaddrinfo
) -> list[Endpoint]:
    """Every endpoint of the target, in entry order. An entry that does not resolve now keeps
    its `previous` endpoints (a DNS hiccup must not drop live replicas) or, with none, stays a
    name for grpc's own resolver: one connection, as without a replica set, until a refresh
    resolves it."""
    endpoints: dict[str, Endpoint] = {}
    for entry in split_target(target):
        found = resolve_entry(entry, getaddrinfo)
        if found is None:
            found = [e for e in previous if e.entry == entry] or [Endpoint(entry, entry)]
        for endpoint in found:
            endpoints.setdefault(endpoint.address, endpoint)  # two entries, one server: once
    return list(endpoints.values())


# --- the replica set ----------------------------------------------------------------------------


@dataclass(eq=False)
class Replica:
    """One replica's client and health."""

    endpoint: Endpoint
    client: Any
    failures: int = 0  # consecutive failures counted (each lengthens the back-off)
    down_until: float = 0.0  # skipped until this clock time
    marked_down_at: float = float("-inf")  # failures of requests started before are known
    in_flight: int = 0
    retired: bool = False  # gone from the target: closed when its last request ends

    def is_up(self, now: float) -> bool:
        return now >= self.down_until


def backoff(failures: int, base_s: float, max_s: float) -> float:
    """Seconds a replica is skipped after `failures` consecutive failures: doubling, capped."""
    return float(min(max_s, base_s * 2 ** max(0, failures - 1)))


def channel_args_for(server_name: str) -> list[tuple[str, Any]]:
    """tritonclient's default channel options plus the TLS name to check the certificate
    against, for a replica dialled by IP (channel_args replace the defaults, so repeat them)."""
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.ssl_target_name_override", server_name),
    ]


def _triton_client(url: str, **kwargs: Any) -> grpcaio.InferenceServerClient:
    # Looked up at call time, so a test can stand in for tritonclient's class.
    return grpcaio.InferenceServerClient(url, **kwargs)


class ReplicaSet:
    """Round robin over the replicas of a Triton target; create and use it on one event loop
    (grpc.aio binds each channel to the loop it was created in)."""

    def __init__(
        self,
        target: str,
        client_kwargs: Mapping[str, Any] | None = None,
        *,
        refresh_s: float = 30.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        resolver: Resolver = resolve,
        client_factory: ClientFactory = _triton_client,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`client_kwargs`: for every client, as the scorer's (TLS credentials). `refresh_s`:
        seconds between resolutions of the target (0: resolve once)."""
        split_target(target)  # a malformed target fails here, not at the first request
        if refresh_s < 0 or backoff_s <= 0 or max_backoff_s < backoff_s:
            raise ValueError(f"need refresh_s >= 0 and 0 < backoff_s <= max_backoff_s, got "
                             f"{refresh_s}, {backoff_s}, {max_backoff_s}")
        self.target = target
        self.refresh_s = refresh_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client_kwargs = dict(client_kwargs or {})
        self._resolver = resolver
        self._client_factory = client_factory
        self._clock = clock
        self._replicas: list[Replica] = []  # in resolution order: the rotation
        self._retired: list[Replica] = []  # gone from the target, requests still in flight
        self._turn = 0  # index of the replica the rotation tries next
        self._next_refresh: float | None = None  # None: not resolved yet
        self._refresh_task: asyncio.Task[None] | None = None

    # --- what it holds

    @property
    def addresses(self) -> list[str]:
        return [r.endpoint.address for r in self._replicas]

    def down(self) -> list[str]:
        """Addresses skipped now, after failures."""
        now = self._clock()
        return [r.endpoint.address for r in self._replicas if not r.is_up(now)]

    def __len__(self) -> int:
        return len(self._replicas)

    # --- resolution

    def connect(self) -> None:
        """Resolve the target and build the clients, once (later calls do nothing). The first
        lookup blocks, once per process start; refreshes run in a thread."""
        if self._next_refresh is None:
            self._apply(self._resolver(self.target, ()))

    async def refresh(self) -> None:
        """Resolve the target again: add new addresses, retire vanished ones."""
        previous = [r.endpoint for r in self._replicas]
        endpoints = await asyncio.to_thread(self._resolver, self.target, previous)
        for replica in self._apply(endpoints):
            await self._close_if_idle(replica)

    def _apply(self, endpoints: Iterable[Endpoint]) -> list[Replica]:
        """Make the replicas match `endpoints`; the retired ones, to close when idle."""
        self._next_refresh = self._clock() + self.refresh_s
        wanted = {e.address: e for e in endpoints}
        current = {r.endpoint.address: r for r in self._replicas}
        retired = [r for address, r in current.items() if address not in wanted]
        for replica in retired:
            replica.retired = True
        self._replicas = [current.get(address) or self._new_replica(endpoint)
                          for address, endpoint in wanted.items()]
        self._retired.extend(retired)
        if retired or len(current) != len(self._replicas):
            log.info("triton replicas of %s: %s", self.target, self.addresses)
        return retired

    def _new_replica(self, endpoint: Endpoint) -> Replica:
        kwargs = dict(self._client_kwargs)
        tls = bool(kwargs.get("creds") or kwargs.get("ssl"))
        if tls and endpoint.address != endpoint.entry and "channel_args" not in kwargs:
            kwargs["channel_args"] = channel_args_for(endpoint.server_name)
        return Replica(endpoint, self._client_factory(endpoint.address, **kwargs))

    def _refresh_if_due(self) -> None:
        due = self._next_refresh is not None and self._clock() >= self._next_refresh
        running = self._refresh_task is not None and not self._refresh_task.done()
        if self.refresh_s and due and not running:
            self._refresh_task = asyncio.create_task(self._refresh_logged())

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:  # a background task: its failure must not go unseen, nor end scoring
            log.exception("resolving Triton target %s failed; keeping %s",
                          self.target, self.addresses)
            self._next_refresh = self._clock() + self.refresh_s

    # --- requests

    async def call(self, request: Callable[[Any], Awaitable[T]]) -> T:
        """`request(client)` on the next replica up; on a replica failure, on the next one.
        Raises the last replica failure once every replica has failed this request, and any
        other error (the server answered) at once."""
        self.connect()
        self._refresh_if_due()
        tried: set[str] = set()
        last: InferenceServerException | None = None
        while (replica := self._pick(tried)) is not None:
            tried.add(replica.endpoint.address)
            started = self._clock()
            replica.in_flight += 1
            try:
                result = await request(replica.client)
            except InferenceServerException as error:
                if error.status() not in REPLICA_DOWN_STATUSES:
                    raise
                self._mark_down(replica, started, error)
                last = error
                continue
            finally:
                replica.in_flight -= 1
                await self._close_if_idle(replica)
            self._mark_up(replica)
            return result
        if self.refresh_s:
            self._next_refresh = self._clock()  # every replica failed: look again soon
        raise last or InferenceServerException(f"no Triton replica for {self.target}",
                                               status="StatusCode.UNAVAILABLE")

    def _pick(self, tried: set[str]) -> Replica | None:
        """The next replica up in the rotation; with none up, the one whose back-off ends
        first (a request is tried on every replica before it fails)."""
        now = self._clock()
        count = len(self._replicas)
        for step in range(count):
            index = (self._turn + step) % count
            replica = self._replicas[index]
            if replica.endpoint.address not in tried and replica.is_up(now):
                self._turn = index + 1
                return replica
        waiting = [r for r in self._replicas if r.endpoint.address not in tried]
        return min(waiting, key=lambda r: r.down_until, default=None)

    def _mark_down(self, replica: Replica, started: float,
                   error: InferenceServerException) -> None:
        if started < replica.marked_down_at:
            return  # sent before the last marking: a failure already counted
        now = self._clock()
        replica.failures += 1
        replica.marked_down_at = now
        replica.down_until = now + backoff(replica.failures, self.backoff_s, self.max_backoff_s)
        # A warning where another replica takes over; with one replica the caller's own error
        # (ScoringError, retried with backoff) already says it, once.
        level = logging.WARNING if len(self._replicas) > 1 else logging.INFO
        log.log(level, "triton replica %s down for %.1f s after %d failure(s): %s",
                replica.endpoint.address, replica.down_until - now, replica.failures,
                error.status())

    def _mark_up(self, replica: Replica) -> None:
        if replica.failures:
            log.info("triton replica %s answers again", replica.endpoint.address)
        replica.failures = 0
        replica.down_until = 0.0

    # --- closing

    async def _close_if_idle(self, replica: Replica) -> None:
        if replica.retired and replica.in_flight == 0 and replica in self._retired:
            self._retired.remove(replica)
            await replica.client.close()

    async def close(self) -> None:
        """Stop refreshing and close every client; the set can connect again afterwards."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            await asyncio.gather(self._refresh_task, return_exceptions=True)
            self._refresh_task = None
        replicas, self._replicas, self._retired = self._replicas + self._retired, [], []
        self._next_refresh = None
        for replica in replicas:
            await replica.client.close()
