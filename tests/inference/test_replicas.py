"""ReplicaSet without a server: resolution, rotation, marking down and up, refresh, closing.

Stand-in clients record what they were built with and answer or fail as told; a stand-in
clock moves back-offs and refreshes forward without sleeping."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import pytest
from tritonclient.utils import InferenceServerException

from inference.replicas import (
    Endpoint,
    ReplicaSet,
    backoff,
    resolve,
    split_target,
)

UNAVAILABLE = "StatusCode.UNAVAILABLE"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StandIn:
    """A tritonclient aio client: `infer()` answers its url, or raises `fail` as a status."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url, self.kwargs = url, kwargs
        self.fail: str | None = None
        self.gate: asyncio.Event | None = None  # set: the request waits for it
        self.calls = 0
        self.closed = False

    async def infer(self) -> str:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise InferenceServerException(f"{self.url} says no", status=self.fail)
        return self.url

    async def close(self) -> None:
        self.closed = True


class Dns:
    """A resolver answering the addresses it is told, for any target."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.broken = False

    def __call__(self, target: str, previous: Sequence[Endpoint]) -> list[Endpoint]:
        if self.broken:
            raise OSError("resolver thread died")
        return [Endpoint(address, target) for address in self.addresses]


def _replicas(dns: Dns, clock: Clock, **kwargs: Any) -> tuple[ReplicaSet, dict[str, StandIn]]:
    """A set over stand-ins; the dict maps each address to its newest client."""
    clients: dict[str, StandIn] = {}

    def factory(url: str, **client_kwargs: Any) -> StandIn:
        clients[url] = StandIn(url, **client_kwargs)
        return clients[url]

    kwargs.setdefault("backoff_s", 1.0)
    replicas = ReplicaSet("triton:8001", kwargs.pop("client_kwargs", None), resolver=dns,
                          client_factory=factory, clock=clock, **kwargs)
    return replicas, clients


async def _infer(replicas: ReplicaSet) -> str:
    result: str = await replicas.call(lambda client: client.infer())
    return result


async def _infer_n(replicas: ReplicaSet, n: int) -> list[str]:
    return [await _infer(replicas) for _ in range(n)]


# --- resolution ---------------------------------------------------------------------------------


def _getaddrinfo(answers: dict[str, list[str]]):
    """A getaddrinfo over a table; each address twice (as for two socket types) to dedupe."""
    def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            infos += [(family, socket.SOCK_STREAM, 6, "", (address, port))] * 2
        return infos
    return getaddrinfo


def test_a_name_resolves_to_every_address_once_sorted() -> None:
    lookup = _getaddrinfo({"triton": ["10.0.0.7", "10.0.0.3", "fd00::5"]})
    assert [e.address for e in resolve("triton:8001", getaddrinfo=lookup)] == [
        "10.0.0.3:8001", "10.0.0.7:8001", "[fd00::5]:8001"]


@pytest.mark.parametrize("target", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001"])
def test_an_ip_or_localhost_resolves_to_itself_without_a_lookup(target: str) -> None:
    def no_lookup(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        raise AssertionError("looked up")

    assert resolve(target, getaddrinfo=no_lookup) == [Endpoint(target, target)]


def test_an_explicit_list_names_each_server_and_a_repeat_once() -> None:
    lookup = _getaddrinfo({"triton-a": ["10.0.0.1"], "triton-b": ["10.0.0.2"]})
    endpoints = resolve("triton-a:8001, triton-b:8001,10.0.0.1:8001", getaddrinfo=lookup)
    assert endpoints == [Endpoint("10.0.0.1:8001", "triton-a:8001"),
                         Endpoint("10.0.0.2:8001", "triton-b:8001")]


def test_a_name_that_does_not_resolve_keeps_its_previous_addresses_else_stays_a_name() -> None:
    lookup = _getaddrinfo({"triton-b": ["10.0.0.2"]})
    previous = [Endpoint("10.0.0.9:8001", "triton-a:8001")]
    target = "triton-a:8001,triton-b:8001"
    assert [e.address for e in resolve(target, previous, lookup)] == [
        "10.0.0.9:8001", "10.0.0.2:8001"]
    assert [e.address for e in resolve(target, (), lookup)] == [
        "triton-a:8001", "10.0.0.2:8001"]


@pytest.mark.parametrize("target", ["", " , ", "triton", "triton:", ":8001", "triton:grpc"])
def test_a_malformed_target_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="Triton target"):
        split_target(target)
    with pytest.raises(ValueError, match="Triton target"):
        ReplicaSet(target)


# --- rotation, down and up ----------------------------------------------------------------------


def test_requests_go_round_robin() -> None:
    replicas, _ = _replicas(Dns("a:1", "b:1", "c:1"), Clock())
    assert asyncio.run(_infer_n(replicas, 6)) == ["a:1", "b:1", "c:1", "a:1", "b:1", "c:1"]


def test_a_failing_replica_is_skipped_its_request_retried_then_tried_again_later() -> None:
    clock = Clock()
    replicas, clients = _replicas(Dns("a:1", "b:1", "c:1"), clock, backoff_s=1.0)

    async def run() -> None:
        assert await _infer(replicas) == "a:1"
        clients["b:1"].fail = UNAVAILABLE
        assert await _infer(replicas) == "c:1"  # b failed it; retried on the next
        assert replicas.down() == ["b:1"]
        assert await _infer_n(replicas, 4) == ["a:1", "c:1", "a:1", "c:1"]
        assert clients["b:1"].calls == 1
        clock.now += 1.0  # its back-off is over: tried again, fails again, skipped longer
        assert await _infer_n(replicas, 2) == ["a:1", "c:1"]  # b's turn went to c again
        assert clients["b:1"].calls == 2
        clock.now += 1.5  # doubled to 2 s: still down
        assert replicas.down() == ["b:1"]
        clock.now += 0.5
        clients["b:1"].fail = None
        assert "b:1" in await _infer_n(replicas, 3)  # back in the rotation
        assert replicas.down() == []

    asyncio.run(run())


def test_an_answer_about_the_request_is_raised_at_once_without_marking_down() -> None:
    replicas, clients = _replicas(Dns("a:1", "b:1"), Clock())

    async def run() -> None:
        replicas.connect()
        clients["a:1"].fail = "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException, match="a:1 says no"):
            await _infer(replicas)
        assert clients["b:1"].calls == 0 and replicas.down() == []

    asyncio.run(run())


def test_a_request_fails_only_after_every_replica_failed_it() -> None:
    clock = Clock()
    replicas, clients = _replicas(Dns("a:1", "b:1"), clock, backoff_s=1.0)

    async def run() -> None:
        replicas.connect()
        a, b = clients["a:1"], clients["b:1"]
        a.fail = UNAVAILABLE
        assert await _infer(replicas) == "b:1"  # a down until +1 s
        clock.now += 0.5
        b.fail = "StatusCode.DEADLINE_EXCEEDED"
        with pytest.raises(InferenceServerException) as failure:
            await _infer(replicas)  # b fails it, then a (down, but the only one left) too
        assert failure.value.status() == UNAVAILABLE
        assert (a.calls, b.calls) == (2, 2)
        assert sorted(replicas.down()) == ["a:1", "b:1"]
        # All down: the next request still goes to the one whose back-off ends first (b's
        # first, 1 s; a's second, 2 s).
        b.fail = None
        assert await _infer(replicas) == "b:1"

    asyncio.run(run())


def test_requests_in_flight_when_a_replica_dies_count_as_one_failure() -> None:
    clock = Clock()
    replicas, clients = _replicas(Dns("a:1"), clock, backoff_s=1.0)

    async def run() -> None:
        replicas.connect()
        client = clients["a:1"]
        client.fail, client.gate = UNAVAILABLE, asyncio.Event()
        calls = [asyncio.create_task(_infer(replicas)) for _ in range(5)]
        await asyncio.sleep(0)
        clock.now += 0.5
        client.gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, InferenceServerException) for r in results)
        replica = replicas._replicas[0]
        assert replica.failures == 1 and replica.down_until == clock.now + 1.0

    asyncio.run(run())


def test_no_replica_at_all_is_unavailable() -> None:
    replicas, _ = _replicas(Dns(), Clock())
    with pytest.raises(InferenceServerException, match="no Triton replica") as failure:
        asyncio.run(_infer(replicas))
    assert failure.value.status() == UNAVAILABLE


@pytest.mark.parametrize(("failures", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 30.0)])
def test_backoff_doubles_up_to_its_cap(failures: int, expected: float) -> None:
    assert backoff(failures, 1.0, 30.0) == expected


# --- refresh ------------------------------------------------------------------------------------


def test_a_refresh_adds_new_addresses_and_closes_vanished_ones() -> None:
    dns = Dns("a:1", "b:1")
    replicas, clients = _replicas(dns, Clock())

    async def run() -> None:
        replicas.connect()
        a, b = clients["a:1"], clients["b:1"]
        dns.addresses = ["b:1", "c:1"]
        await replicas.refresh()
        assert replicas.addresses == ["b:1", "c:1"]
        assert a.closed and not b.closed
        assert replicas._replicas[0].client is b  # kept, not rebuilt
        assert sorted(set(await _infer_n(replicas, 4))) == ["b:1", "c:1"]

    asyncio.run(run())


def test_requests_refresh_in_the_background_every_refresh_s() -> None:
    clock = Clock()
    dns = Dns("a:1")
    replicas, _ = _replicas(dns, clock, refresh_s=30.0)

    async def run() -> None:
        await _infer(replicas)
        dns.addresses = ["a:1", "b:1"]
        clock.now += 29.0
        await _infer(replicas)
        assert replicas._refresh_task is None  # not due yet
        clock.now += 1.0
        await _infer(replicas)  # answered by the current set; the refresh starts beside it
        assert replicas._refresh_task is not None
        await replicas._refresh_task
        assert replicas.addresses == ["a:1", "b:1"]
        await replicas.close()

    asyncio.run(run())


def test_a_failed_refresh_keeps_the_replicas(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    dns = Dns("a:1", "b:1")
    replicas, _ = _replicas(dns, clock, refresh_s=5.0)

    async def run() -> None:
        await _infer(replicas)
        dns.broken, clock.now = True, clock.now + 5.0
        await _infer(replicas)
        assert replicas._refresh_task is not None
        await replicas._refresh_task
        assert replicas.addresses == ["a:1", "b:1"]
        assert await _infer_n(replicas, 2) == ["a:1", "b:1"]

    asyncio.run(run())
    assert "resolving Triton target triton:8001 failed" in caplog.text


def test_a_vanished_replica_is_closed_only_after_its_request_ends() -> None:
    dns = Dns("a:1", "b:1")
    replicas, clients = _replicas(dns, Clock())

    async def run() -> None:
        replicas.connect()
        a = clients["a:1"]
        a.gate = asyncio.Event()
        pending = asyncio.create_task(_infer(replicas))
        await asyncio.sleep(0)
        dns.addresses = ["b:1"]
        await replicas.refresh()
        assert not a.closed
        a.gate.set()
        assert await pending == "a:1"
        assert a.closed

    asyncio.run(run())


# --- clients and closing ------------------------------------------------------------------------


def test_clients_get_the_scorers_keyword_arguments_and_tls_checks_the_target_name() -> None:
    creds = object()
    dns = Dns("10.0.0.1:8001")
    replicas, clients = _replicas(dns, Clock(), client_kwargs={"creds": creds})
    plain, plain_clients = _replicas(dns, Clock(), client_kwargs={})
    replicas.connect()
    plain.connect()
    tls_kwargs = clients["10.0.0.1:8001"].kwargs
    assert tls_kwargs["creds"] is creds
    # Dialled by IP, the certificate is still checked against the name the target gave.
    assert ("grpc.ssl_target_name_override", "triton") in tls_kwargs["channel_args"]
    assert plain_clients["10.0.0.1:8001"].kwargs == {}


def test_close_closes_every_client_and_the_set_can_connect_again() -> None:
    replicas, clients = _replicas(Dns("a:1", "b:1"), Clock())

    async def run() -> None:
        await _infer(replicas)
        first = dict(clients)
        await replicas.close()
        assert all(c.closed for c in first.values()) and len(replicas) == 0
        assert await _infer(replicas) == "b:1"  # the rotation goes on over new clients
        assert clients["b:1"] is not first["b:1"]

    asyncio.run(run())
