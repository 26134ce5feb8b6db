"""The `intentstream` dispatcher as a user meets it: grouped help, every command's `--help`
with no broker or Triton running, and the one-line failures (no broker, no Triton, nothing to
score, an unknown command, a bad setting). Subprocesses: each case runs the installed console
script exactly as a shell would."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from inference.tritonserver import free_port
from streams.cli import COMMANDS, FAUST, GROUPS, main, usage
from streams.runtime.processes import INTENTSTREAM
from streams.runtime.reachable import Unreachable, require_listening
from training.data.simulator import SimConfig, simulate
from training.progress import progress_bar

EXPECTED_GROUPS = {
    "run": ["worker", "feedback"],
    "model": ["train", "retrain"],
    "analyse": ["replay", "backtest", "bench", "watch"],
    "operate": ["create-topics", "health", "user"],
}


def intentstream(*args: str, env: dict[str, str] | None = None,
                 timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The console script, with a broker and a Triton URL where nothing listens."""
    dead = {"INTENTSTREAM_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
            "INTENTSTREAM_TRITON_URL": f"127.0.0.1:{free_port()}"}
    return subprocess.run([str(INTENTSTREAM), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **dead, **(env or {})})


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def sections(text: str) -> dict[str, list[str]]:
    """Help text → {group heading: command names listed under it}."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            out[current] = []
        elif current is not None and line.startswith("  ") and line.strip():
            out[current].append(line.split()[0])
    return out


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_lists_every_command_grouped(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    listed = sections(capsys.readouterr().out)
    for group, names in EXPECTED_GROUPS.items():
        assert listed[group] == names
    faust_group = next(g for g in listed if g.startswith("faust"))
    assert {"agents", "tables", "send"} <= set(listed[faust_group])
    for line in usage().splitlines():  # one line per command, each with a summary
        if line.startswith("  "):
            name, _, summary = line.strip().partition(" ")
            assert name in COMMANDS and summary.strip()


def test_every_faust_command_is_listed_and_every_listed_one_exists() -> None:
    from faust.cli.faust import cli

    from streams.worker import agent, commands  # noqa: F401  (registers ours on the app)

    faust_targets = {c.name for c in COMMANDS.values() if c.target == FAUST}
    assert set(cli.commands) == faust_targets
    assert len(COMMANDS) == sum(len(group) for _, group in GROUPS)  # no name twice


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_commands_help_needs_no_broker_or_triton(command: str) -> None:
    result = intentstream(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "Traceback" not in result.stderr


def test_backtest_without_a_broker_is_one_line_and_exit_1() -> None:
    port = free_port()
    result = intentstream("backtest", "--from", "2026-11-01", "--to", "2026-11-02",
                          "--broker-url", f"kafka://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"no broker answers at 127.0.0.1:{port}" in one_error_line(result)


def events_file(path: Path, n_users: int = 3) -> Path:
    events = [e for h in simulate(n_users, SimConfig(seed=1)) for e in h.events[:5]]
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def test_replay_without_triton_is_one_line_and_exit_1(tmp_path: Path) -> None:
    port = free_port()
    result = intentstream("replay", str(events_file(tmp_path / "events.jsonl")),
                          "--triton-url", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_replay_of_a_file_with_no_valid_event_exits_2_with_counts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{broken\n[1, 2]\n{"user_id": "u1"}\n{"nope": 1}\n')
    result = intentstream("replay", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "no valid event" in line and "4 records" in line
    assert "not_json 1" in line and "not_object 1" in line and "missing_field 2" in line
    assert not (tmp_path / "out").exists()


def test_replay_of_a_range_with_no_event_exits_2(tmp_path: Path) -> None:
    result = intentstream("replay", str(events_file(tmp_path / "events.jsonl")),
                          "--from", "2099-01-01")
    assert result.returncode == 2
    assert "before_range 15" in one_error_line(result)


def test_unknown_command_and_bad_setting_are_one_line_exit_2() -> None:
    unknown = intentstream("no-such-command")
    assert unknown.returncode == 2 and "no-such-command" in one_error_line(unknown)
    bad = intentstream("watch", env={"INTENTSTREAM_PARTITIONS": "many"})
    assert bad.returncode == 2 and "partitions" in one_error_line(bad)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_are_drawn_only_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with progress_bar(total=3) as bar:
        assert bar.disable
    monkeypatch.setattr("sys.stderr", _Terminal())
    with progress_bar(total=3) as bar:
        assert not bar.disable
    with progress_bar(enabled=False, total=3) as bar:
        assert bar.disable


def test_require_listening() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        require_listening([f"127.0.0.1:{server.getsockname()[1]}"], "broker")
    with pytest.raises(Unreachable, match=r"no broker answers at 127\.0\.0\.1:\d+ \(.*\); hint"):
        require_listening([f"127.0.0.1:{free_port()}"], "broker", "hint")
