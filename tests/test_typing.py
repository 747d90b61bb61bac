"""Users who run mypy against the public API need it clean: mypy (configured in pyproject.toml) finds no error in
the package nor in the Discord integration. Run as a subprocess, as CI and users run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["dspy_tokens", "integrations/discord/dspy_tokens_discord"]


def test_mypy_finds_no_error_in_the_packages(tmp_path):
    """``mypy dspy_tokens integrations/discord/dspy_tokens_discord`` succeeds (its errors are the failure)."""
    pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *PACKAGES],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 0 and not errors, "\n".join(errors) or result.stdout + result.stderr
