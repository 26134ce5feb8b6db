"""A RocksDB worker without a WORKER_ID takes a data directory no live process holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.worker.app import claim_slot

HOLD = """
import sys, time
from pathlib import Path
from streams.worker.app import claim_slot
path, lock = claim_slot(Path(sys.argv[1]))
print(path.name, flush=True)
time.sleep(60)
"""


def test_two_processes_take_different_slots_and_a_dead_ones_is_free_again(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True, env={"INTENTSTREAM_METRICS_PORT": "0"})
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "slot-0"
        path, lock = claim_slot(tmp_path)
        assert path == tmp_path / "slot-1"
        lock.close()
    finally:
        other.kill()  # SIGKILL: the kernel drops its lock
        other.wait()
    path, lock = claim_slot(tmp_path)
    assert path == tmp_path / "slot-0"
    lock.close()
