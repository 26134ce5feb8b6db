"""`intentstream user USER_ID [--url]` (streams/worker/commands.py): the worker's JSON as it
is, or one line and exit 1 for an unknown user, a worker that cannot answer now, or none."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inference.tritonserver import free_port
from streams.worker.commands import ask_user
from tests.cli.test_cli import intentstream

VIEW = {"schema_version": 1, "user_id": "u/1", "partition": 3}


class FakeWorker(BaseHTTPRequestHandler):
    """Answers as a worker's /users/{id} does, by the id asked for."""

    def do_GET(self) -> None:  # http.server's name for it
        answers = {
            "/users/u%2F1": (200, VIEW, {}),
            "/users/u-404": (404, {"error": "unknown user"}, {}),
            "/users/u-503": (503, {"error": "unavailable", "reason": "rebalancing"},
                             {"Retry-After": "5"}),
        }
        code, doc, headers = answers.get(self.path, (500, {}, {}))
        self.send_response(code)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(json.dumps(doc).encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def worker_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeWorker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_answer_is_printed_as_the_worker_sent_it(worker_url):
    status, text = ask_user(worker_url, "u/1", 5)  # quoted in the path, '/' included
    assert status == 0 and json.loads(text) == VIEW


def test_unknown_and_unavailable_are_one_line_and_exit_1(worker_url):
    assert ask_user(worker_url, "u-404", 5) == (
        1, "intentstream user: unknown user 'u-404' (404)")
    assert ask_user(worker_url + "/", "u-503", 5) == (
        1, "intentstream user: unavailable now (503): rebalancing; retry after 5 s")


def test_no_worker_is_one_line_and_exit_1():
    status, line = ask_user(f"http://127.0.0.1:{free_port()}", "u-1", 2)
    assert status == 1 and line.startswith("intentstream user: cannot reach http://127.0.0.1:")
    assert "\n" not in line


def test_the_command_exits_1_with_the_line_on_stderr(worker_url):
    result = intentstream("user", "u-503", "--url", worker_url, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "intentstream user: unavailable now (503): rebalancing; retry after 5 s")
    result = intentstream("user", "u/1", "--url", worker_url, timeout=120)
    assert result.returncode == 0 and json.loads(result.stdout) == VIEW
