"""Serving: inside a running event loop beside other work, from the shell with ``dspy-tokens serve``, and never
beyond loopback without a token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import httpx
import pytest

from dspy_tokens import ConfigurationError
from dspy_tokens.web import create_app, serve_in_background
from tests.support.web import ADMIN_TOKEN, READ_TOKEN


class TestInTheHostsLoop:
    async def test_serves_from_the_running_loop_without_blocking_it(self, sqlite_seeded):
        """A bot's loop keeps ticking while the app answers (report reads run on worker threads)."""
        web = await serve_in_background(sqlite_seeded.url, port=0, read_token=READ_TOKEN)
        ticks = 0

        async def heartbeat():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        beat = asyncio.create_task(heartbeat())
        try:
            async with httpx.AsyncClient(base_url=web.url, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as api:
                responses = await asyncio.gather(*[api.get("/api/usage/stats", params={"period": "all"})
                                                   for _ in range(10)])
            assert [r.status_code for r in responses] == [200] * 10
            assert responses[0].json()["total_calls"] == len(sqlite_seeded.rows)
            assert ticks > 0
        finally:
            beat.cancel()
            await web.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(web.url + "healthz", timeout=2)

    async def test_a_busy_port_is_an_error_at_the_call(self, sqlite_seeded):
        """The socket is bound before serving: a port in use raises OSError naming it."""
        first = await serve_in_background(sqlite_seeded.url, port=0, read_token=READ_TOKEN)
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        try:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
                await serve_in_background(sqlite_seeded.url, port=port, read_token=READ_TOKEN)
        finally:
            await first.stop()

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
    async def test_refuses_beyond_loopback_without_a_token(self, sqlite_seeded, host):
        """An open app listens on loopback only; the error says how to add a token."""
        with pytest.raises(ConfigurationError, match="DSPY_TOKENS_READ_TOKEN"):
            await serve_in_background(create_app(sqlite_seeded.url), host=host, port=0)

    async def test_with_a_token_it_may_listen_on_every_interface(self, sqlite_seeded):
        """0.0.0.0 is allowed once a token protects the app."""
        web = await serve_in_background(sqlite_seeded.url, host="0.0.0.0", port=0, admin_token=ADMIN_TOKEN)
        try:
            port = web.url.rsplit(":", 1)[1].strip("/")
            async with httpx.AsyncClient() as api:
                assert (await api.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        finally:
            await web.stop()


def _serve(args, env=None):
    full = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    for name in ("DSPY_TOKENS_ADMIN_TOKEN", "DSPY_TOKENS_READ_TOKEN"):
        if env is None or name not in env:
            full.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "dspy_tokens", "serve", *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class TestCommandLine:
    @pytest.mark.slow
    def test_dspy_tokens_serve_answers_with_the_tokens_from_the_environment(self, sqlite_seeded):
        """``dspy-tokens serve --database URL --port 0`` prints its address and serves the API with the tokens of
        DSPY_TOKENS_ADMIN_TOKEN / DSPY_TOKENS_READ_TOKEN."""
        proc = _serve(["--database", sqlite_seeded.url, "--port", "0", "--log-level", "warning"],
                      env={"DSPY_TOKENS_ADMIN_TOKEN": ADMIN_TOKEN, "DSPY_TOKENS_READ_TOKEN": READ_TOKEN})
        try:
            line = proc.stderr.readline()
            assert "dspy-tokens dashboard on http://127.0.0.1:" in line, line
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = httpx.get(url + "api/usage/stats", params={"period": "all"},
                                         headers={"Authorization": f"Bearer {READ_TOKEN}"}, timeout=5)
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert response.status_code == 200 and response.json()["total_calls"] == len(sqlite_seeded.rows)
            assert httpx.get(url + "api/usage", headers={"Authorization": "Bearer nope"}).status_code == 401
        finally:
            proc.terminate()
            proc.wait(30)

    @pytest.mark.parametrize("args, says", [
        (["--host", "0.0.0.0"], "beyond this machine"),
        (["--admin-token", "short"], "at least 16"),
    ])
    def test_dspy_tokens_serve_refuses_a_bad_setup_in_one_line(self, sqlite_seeded, args, says):
        """Beyond loopback without a token, or a weak token: exit 1 with one line that says the fix."""
        proc = _serve(["--database", sqlite_seeded.url, "--port", "0", *args])
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and says in err and "Traceback" not in err

    def test_dspy_tokens_serve_needs_an_existing_database(self, tmp_path):
        """A missing SQLite file is an error, not a new empty dashboard."""
        proc = _serve(["--database", f"sqlite:///{tmp_path / 'none.db'}", "--port", "0"])
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "no database at" in err
