"""tritonserver itself: a broken repository fails fast, with its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.tritonserver import TritonError, TritonServer


@pytest.mark.e2e
def test_broken_repository_fails_fast_with_the_log(repo: Path) -> None:
    (repo / "intent_bert" / "config.pbtxt").write_text('name: "intent_bert"\nnot protobuf\n')
    server = TritonServer(repo)
    with pytest.raises(TritonError, match="exited before ready"), server:
        pass
    assert not server.is_running()
    assert "intent_bert" in server.log_tail()
