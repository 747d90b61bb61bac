"""The wheel and the sdist, built the way a release is (``python -m build --no-isolation``: the sdist, then the
wheel from the unpacked sdist, offline with the dev extra's setuptools, wheel and build), and what they hold."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "dspy_tokens"
DISCORD = ROOT / "integrations" / "discord" / "dspy_tokens_discord"
REPOSITORY = "https://github.com/dspy-tokens/dspy-tokens"
#: Files outside the packages that the sdist must carry (the tests and examples need them, users read them).
SDIST_EXTRAS = ("CHANGELOG.md", "LICENSE", "README.md", "models.json", "pyproject.toml", "MANIFEST.in",
                "integrations/discord/README.md")
SDIST_TREES = ("tests", "examples", "benchmarks")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel, sdist, build output) of one ``python -m build --no-isolation`` of the working tree."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    [wheel] = out.glob("dspy_tokens-*.whl")
    [sdist] = out.glob("dspy_tokens-*.tar.gz")
    return wheel, sdist, done.stdout + done.stderr


def _source_files(tree: str) -> set[str]:
    """The repository's files under ``tree`` (tracked ones in a git checkout; every file in an unpacked sdist)."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", tree], cwd=ROOT, capture_output=True, text=True, check=True)
        return {line for line in listed.stdout.splitlines() if (ROOT / line).is_file()}
    return {str(p.relative_to(ROOT)) for p in (ROOT / tree).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


class TestWheel:
    def test_the_wheel_contains_every_subpackage_and_no_tests(self, built):
        """Packages are found automatically: every directory with an ``__init__.py`` is in the wheel, both packages
        carry ``py.typed``, and neither tests nor examples are installed."""
        names = zipfile.ZipFile(built[0]).namelist()
        packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
        expected = {str(p.parent.relative_to(ROOT)) for p in CORE.rglob("__init__.py")}
        expected |= {str(p.parent.relative_to(DISCORD.parent)) for p in DISCORD.rglob("__init__.py")}
        assert packages == expected
        assert {"dspy_tokens/py.typed", "dspy_tokens_discord/py.typed"} <= set(names)
        assert "dspy_tokens_discord/testing/fake.py" in names
        assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]

    def test_the_metadata_names_license_urls_classifiers_and_extras(self, built):
        """METADATA: the SPDX license with its file, the project URLs, classifiers, rich and the extras; the entry
        point is the ``dspy-tokens`` command."""
        wheel = zipfile.ZipFile(built[0])
        [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        text = wheel.read(metadata).decode()
        assert "License-Expression: MIT" in text and "License-File: LICENSE" in text
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
        urls = dict(re.findall(r"^Project-URL: ([^,]+), (\S+)$", text, flags=re.MULTILINE))
        assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(urls)
        assert all(url.startswith(REPOSITORY) for url in urls.values())
        classifiers = re.findall(r"^Classifier: (.+)$", text, flags=re.MULTILINE)
        assert "Typing :: Typed" in classifiers and "Programming Language :: Python :: 3.10" in classifiers
        assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX expression says it
        assert re.search(r"^Requires-Dist: rich", text, flags=re.MULTILINE)
        assert {"postgres", "mysql", "discord", "dev"} <= set(re.findall(r"^Provides-Extra: (\S+)$", text,
                                                                        flags=re.MULTILINE))
        [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert "dspy-tokens = dspy_tokens.cli:main" in wheel.read(entry_points).decode()

    def test_the_build_warns_of_nothing(self, built):
        """setuptools raises no deprecation (the SPDX ``license`` string, no license table or classifier)."""
        warnings = [line for line in built[2].splitlines() if re.search(r"deprecat|SetuptoolsWarning", line, re.I)]
        assert warnings == []


class TestSdist:
    def test_the_sdist_holds_the_tests_examples_benchmarks_and_example_config(self, built):
        """Every file of ``tests/`` (conftest, tests/discord, tests/reliability, the support packages), ``examples/``
        and ``benchmarks/`` is in the sdist, with the example models.json, the changelog and the license."""
        with tarfile.open(built[1]) as sdist:
            top = sdist.getnames()[0].split("/")[0]
            names = {n[len(top) + 1:] for n in sdist.getnames()}
        wanted = set(SDIST_EXTRAS)
        for tree in SDIST_TREES:
            wanted |= _source_files(tree)
        assert {"tests/conftest.py", "tests/discord/conftest.py", "tests/discord/support/bot.py",
                "tests/reliability/test_crash.py", "tests/support/workers/child.py",
                "examples/test_example_bot.py"} <= wanted
        assert sorted(wanted - names) == []
        assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".db"))]

    def test_the_tests_collect_from_the_unpacked_sdist(self, built, tmp_path):
        """Unpacked, the sdist's own test suite collects without an error, the Discord, reliability and example
        tests included (the conftest and support packages are all there)."""
        with tarfile.open(built[1]) as sdist:
            sdist.extractall(tmp_path, filter="data")
        [unpacked] = tmp_path.iterdir()
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=unpacked,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        collected = [line for line in done.stdout.splitlines() if "::" in line]
        for tree in ("tests/discord/", "tests/reliability/", "tests/cli/", "examples/"):
            assert any(line.startswith(tree) for line in collected), tree
        assert len(collected) > 500


def test_readme_links_work_on_pypi():
    """The README is the PyPI page: every link is absolute (or an anchor), and those into this repository name
    files that exist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links
    assert [link for link in links if not link.startswith(("https://", "http://", "#"))] == []
    raw = REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    for prefix in (f"{REPOSITORY}/blob/main/", raw):
        for link in links:
            if link.startswith(prefix):
                assert (ROOT / link[len(prefix):].split("#")[0]).is_file(), link


def test_dspy_tokens_serve_runs_from_a_fresh_install_with_the_web_extra(built, tmp_path):
    """A new virtualenv, ``pip install 'dspy_tokens-<version>.whl[web]'`` and nothing else: the installed
    ``dspy-tokens demo`` records its calls, ``dspy-tokens serve`` (tokens from the environment) serves them:
    /healthz, the stats the seed asked for, a refused wrong token, and the dashboard's login page."""
    import os
    import time

    import httpx

    wheel = built[0]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    done = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[web]"],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPY_TOKENS_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_TOKENS_READ_TOKEN": "read-token-0123456789abcdef",
            "DSPY_TOKENS_ADMIN_TOKEN": "admin-token-0123456789abcdef"}
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    demo = subprocess.run([str(bin_dir / "dspy-tokens"), "demo", "--database", url], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    proc = subprocess.Popen([str(bin_dir / "dspy-tokens"), "serve", "--database", url, "--port", "0"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "dspy-tokens dashboard on http://127.0.0.1:" in line, line + proc.stderr.read()[-2000:]
        base = line.split(" on ", 1)[1].split(" ", 1)[0]
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(base + "healthz", timeout=5)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        stats = httpx.get(base + "api/usage/stats", params={"period": "all"},
                          headers={"Authorization": "Bearer read-token-0123456789abcdef"}, timeout=30)
        assert stats.status_code == 200 and stats.json()["total_calls"] > 0, stats.text
        assert httpx.get(base + "api/usage/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = httpx.get(base, follow_redirects=True, timeout=30)
        assert page.status_code == 200 and "token" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(30)
