"""The launcher's pieces, and a start that fails the way a broken repository does."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from inference import repository
from inference.repository import copy_repository
from inference.tritonserver import build_backend_dir, server_env


def test_backend_dir_links_the_stub_for_this_python(tmp_path: Path) -> None:
    python_dir = build_backend_dir(tmp_path / "backends") / "python"
    links = sorted(python_dir.iterdir())
    assert [p.name for p in links] == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    assert all(p.is_symlink() and p.resolve().is_file() for p in links)
    stub = (python_dir / "triton_python_backend_stub").resolve()
    assert stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_env_puts_this_venv_and_libpython_first() -> None:
    env = server_env({"PATH": "/usr/bin", "HF_HUB_OFFLINE": "0"})
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")
    assert env["HF_HUB_OFFLINE"] == "0"  # an explicit choice is kept
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"  # spinning OpenMP threads starve the worker
    assert server_env({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"


def test_copy_leaves_built_versions_out(repo: Path, tmp_path: Path) -> None:
    built = repo / "intent_bert" / "3" / "artifacts"
    built.mkdir(parents=True)
    copy = copy_repository(repo, tmp_path / "copy")
    assert repository.versions(copy / "intent_bert") == []
    assert (copy / "intent" / "1" / ".gitkeep").is_file()  # the ensemble's empty version stays
