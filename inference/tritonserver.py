"""Run the real tritonserver that nvidia-pytriton ships, on loopback (demo, tests, laptops).

The wheel's server needs three adjustments to run from a virtualenv:
1. a backend directory of symlinks that includes the python stub for this Python version;
2. this interpreter's bin/ first on PATH, so the stub finds the venv's packages;
3. the base interpreter's LIBDIR on LD_LIBRARY_PATH, so the stub loads the right libpython.

Model control is explicit: the server starts with the `intent` ensemble (which loads its
steps), and a new intent_bert version is swapped in later through the repository API
(`TritonServer.load_model("intent_bert")`).

    python -m inference.tritonserver --repo triton_models [--grpc-port 8001 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .repository import ENSEMBLE, REPOSITORY_TEMPLATE, copy_repository

LOOPBACK = "127.0.0.1"
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"
# The committed model repository, when running from a source checkout.


class TritonError(RuntimeError):
    """tritonserver could not be started, became unready, or refused a request."""


# --- pieces of the launch -----------------------------------------------------------------------


def triton_home() -> Path:
    """`site-packages/pytriton/tritonserver`: bin/, backends/, python_backend_stubs/."""
    spec = importlib.util.find_spec("pytriton")  # locate without importing pytriton itself
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("nvidia-pytriton is not installed: it provides tritonserver")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def build_backend_dir(dest: Path, home: Path | None = None) -> Path:
    """`dest/python/` with symlinks to the python backend and this Python's stub."""
    home = home or triton_home()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / STUB
    if not stub.is_file():
        raise TritonError(f"no python backend stub for Python {version} under {home}")
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    # Symlinks, not copies: the stub resolves its own libraries relative to its real path.
    for source in [home / "backends" / "python" / name for name in PYTHON_BACKEND_FILES] + [stub]:
        (python_dir / source.name).symlink_to(source)
    return dest


def server_env(base: Mapping[str, str]) -> dict[str, str]:
    """`base` plus what the python stub needs to run this venv's interpreter and packages."""
    env = dict(base)
    venv_bin = str(Path(sys.executable).parent)  # not resolved: that would leave the venv
    env["PATH"] = os.pathsep.join(filter(None, [venv_bin, env.get("PATH")]))
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    # Weights and tokenizer files come from the repository, never from a hub.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    # torch's OpenMP threads otherwise spin between parallel regions: on a small machine shared
    # with the broker and the worker that burnt 5.6 ms of CPU per text on the tiny model instead
    # of 1.0 (docs/benchmarks.md); onnxruntime's spinning is off in its session options.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def free_port() -> int:
    """A loopback port free right now (another process could still take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# --- the server ---------------------------------------------------------------------------------


class TritonServer:
    """One tritonserver process over `repo`, bound to 127.0.0.1.

    Use as a context manager (start, wait until ready, stop), or call start(), wait_ready()
    and stop() yourself. Ports left as None are picked free at construction.
    """

    def __init__(
        self,
        repo: Path,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        exit_timeout_s: int = 10,
        extra_args: Sequence[str] = (),
        load_models: Sequence[str] = (ENSEMBLE,),
    ) -> None:
        self.repo = Path(repo).resolve()
        self.load_models = tuple(load_models)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.log_path: Path | None = Path(log_path) if log_path else None  # set by start()
        self._exit_timeout_s = exit_timeout_s
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._backend_dir: Path | None = None

    @property
    def grpc_url(self) -> str:
        """host:port, the form tritonclient.grpc takes."""
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self, backend_dir: Path) -> list[str]:
        return [
            str(triton_home() / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            # Only the served ensemble (its steps load with it): a repository may also hold
            # models this server cannot run, such as the GPU-only onnxruntime intent_bert_onnx.
            *(f"--load-model={name}" for name in self.load_models),
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self._exit_timeout_s}",
            "--disable-auto-complete-config",
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            "--allow-gpu-metrics=false",
            # Stubs talk to the server through /dev/shm regions: a unique prefix keeps two
            # servers on one machine (tests next to a demo) out of each other's regions.
            f"--backend-config=python,shm-region-prefix-name=intentstream{os.getpid()}-"
            f"{secrets.token_hex(4)}-",
            *self._extra_args,
        ]

    def start(self) -> Self:
        if self._process is not None:
            raise TritonError(f"already started (pid {self._process.pid})")
        # The backend symlinks go in a temp directory (removed by stop); the log stays.
        run_dir = Path(tempfile.mkdtemp(prefix="intentstream-triton-"))
        self._backend_dir = build_backend_dir(run_dir / "backends")
        self.log_path = self.log_path or run_dir / "tritonserver.log"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(self._backend_dir),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=server_env(os.environ),
            # Own process group: Ctrl-C in a terminal reaches us, not the server directly,
            # and a last-resort SIGKILL can take the python stubs along.
            start_new_session=True,
        )
        return self

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until every loaded model is ready; TritonError if the server exits or stalls."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready():
            if not self.is_running():
                raise TritonError(f"tritonserver exited before ready\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TritonError(
                    f"tritonserver not ready after {timeout_s:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def load_model(self, name: str, timeout_s: float = 300.0) -> None:
        """(Re)load a model from the repository: for intent_bert, swap to its newest version."""
        url = f"{self.http_url}/v2/repository/models/{name}/load"
        request = urllib.request.Request(url, data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                pass
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")
            raise TritonError(f"loading {name} failed: {detail}") from error

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM by PID, SIGKILL to its process group after `grace_s`; the exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _wait_for_group_exit(process.pid, grace_s)
        if self._log:
            self._log.close()
        if self._backend_dir:
            shutil.rmtree(self._backend_dir, ignore_errors=True)
        return process.returncode

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _wait_for_group_exit(pgid: int, grace_s: float) -> None:
    """Wait for the python stubs in the server's process group, SIGKILL them after grace_s.

    Stubs exit by themselves when the server goes, but only after noticing: a server stopped
    during startup (before it handles SIGTERM) leaves them running for a moment.
    """
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@contextmanager
def tiny_triton_server(
    workdir: Path, *, template: Path = REPOSITORY_TEMPLATE, seed: int = 0
) -> Iterator[TritonServer]:
    """A ready server over a copy of `template` that serves a seeded random tiny model.

    For tests in any package: the copy lives in `workdir/triton_models`, the log beside it.
    The exported weights are at `server.repo / "intent_bert" / "1" / "artifacts"`.
    """
    from .model.export import ensure_model  # deferred: only this helper needs torch

    repo = copy_repository(template, Path(workdir) / "triton_models")
    ensure_model(repo, tiny=True, seed=seed)
    with TritonServer(repo, log_path=Path(workdir) / "tritonserver.log") as server:
        yield server


# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.tritonserver",
        description="Run tritonserver on 127.0.0.1 in the foreground until SIGINT/SIGTERM.",
    )
    parser.add_argument("--repo", type=Path, required=True, help="model repository directory")
    parser.add_argument("--grpc-port", type=int, help="default: a free port")
    parser.add_argument("--http-port", type=int, help="default: a free port")
    parser.add_argument("--metrics-port", type=int, help="default: a free port")
    parser.add_argument("--log-file", type=Path, help="default: a file in a temp directory")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds")
    return parser


class _StopRequested(Exception):
    pass


def _request_stop(signum: int, frame: object) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.repo.is_dir():
        print(f"error: model repository {args.repo} is not a directory", file=sys.stderr)
        return 2
    server = TritonServer(
        args.repo,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log_file,
    )
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for signum in stop_signals:  # before start: the server must never outlive this process
        signal.signal(signum, _request_stop)
    try:
        server.start()
        server.wait_ready(args.ready_timeout)
        ready = {
            "grpc_url": server.grpc_url,
            "http_url": server.http_url,
            "metrics_url": server.metrics_url,
            "pid": server.pid,
            "log": str(server.log_path),
        }
        print(json.dumps(ready), flush=True)
        while server.is_running():
            time.sleep(1.0)
        print(f"error: tritonserver exited\n{server.log_tail()}", file=sys.stderr)
        return 1
    except _StopRequested:
        return 0
    except TritonError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for signum in stop_signals:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(signum, signal.SIG_IGN)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
