"""Real file-system conditions for the fault tests: a tiny tmpfs that fills up, and a read-only bind mount (as a
read-only root file system in Kubernetes). Both need root (or CAP_SYS_ADMIN); tests skip with the reason where
mounting is not permitted. Every mount is undone when its context ends."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest


def _mount(*args: str) -> str | None:
    """Run ``mount``; None on success, else why not."""
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k"):
    """A tmpfs of ``size`` at ``path`` (created); writes beyond it fail with ENOSPC."""
    path.mkdir(parents=True, exist_ok=True)
    problem = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if problem:
        pytest.skip(f"cannot mount a tmpfs here: {problem}")
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (created) becomes read-only: a read-only bind mount of itself. Its files stay readable."""
    path.mkdir(parents=True, exist_ok=True)
    problem = _mount("--bind", str(path), str(path))
    if problem:
        pytest.skip(f"cannot bind-mount here: {problem}")
    problem = _mount("-o", "remount,ro,bind", str(path))
    if problem:
        _umount(path)
        pytest.skip(f"cannot remount read-only here: {problem}")
    try:
        yield path
    finally:
        _umount(path)


def fill(path: Path) -> None:
    """Fill the file system holding ``path`` until a write fails (ENOSPC)."""
    with open(path / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 1024)
