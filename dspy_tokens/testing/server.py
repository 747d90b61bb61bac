"""A local OpenAI-compatible chat-completions server for tests and demos.

Standard library only. It answers ``POST .../chat/completions`` (both
``/v1/chat/completions`` and ``/chat/completions``) the way OpenAI does,
including streaming and usage, so a real ``dspy.LM("openai/...")`` can talk
to it over HTTP with either engine. It also answers the Responses API
(``.../responses``, ``dspy.LM(..., model_type="responses")``, not streamed) and
``.../embeddings`` (``dspy.Embedder``) with those APIs' usage shapes::

    with FakeLLMServer() as server:
        lm = server.lm("openai/gpt-4o-mini")
        server.enqueue(Reply(status=429, headers={"Retry-After": "0"}), Reply(cached_tokens=3))
        ...
        server.requests        # what was asked and exactly what usage was sent
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .endpoints import (
    embedding_inputs,
    embedding_tokens,
    embeddings_body,
    responses_as_chat,
    responses_body,
    responses_usage,
    system_one_body,
)
from .replies import (
    DATED_MODELS,
    USAGE_MODES,
    completion_body,
    count_tokens,
    dated,
    default_content,
    error_body,
    split_content,
)

ENDPOINTS = ("/chat/completions", "/responses", "/embeddings", "/systemone")


class _FakeHTTPServer(ThreadingHTTPServer):
    fake: FakeLLMServer  # the server whose replies and request log the handler uses


@dataclass
class Reply:
    """One scripted answer; every None falls back to the server's default."""

    content: str | None = None
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage: str | dict | None = None  # "full" | "none" | "partial" | dict sent verbatim
    model: str | None = None
    delay: float | None = None
    ignore_include_usage: bool = False
    service_tier: str | None = None  # the chat answer's "service_tier" (default "default")

    def __post_init__(self):
        if isinstance(self.usage, str) and self.usage not in USAGE_MODES:
            raise ValueError(f"usage must be one of {USAGE_MODES} or a dict, not {self.usage!r}")


@dataclass
class RequestLog:
    """One request as received and answered (usage/model exactly as sent)."""

    index: int
    path: str
    body: Any
    headers: dict[str, str]
    started: float
    stream: bool = False
    status: int | None = None  # None while in flight
    usage: dict | None = None
    model: str | None = None
    content: list[str] = field(default_factory=list)  # one entry per choice
    finished: float | None = None


class FakeLLMServer:
    """OpenAI-compatible chat-completions server on 127.0.0.1 in a daemon thread."""

    def __init__(self, port: int = 0, *, delay: float = 0.0, usage: str | dict = "full", cached_tokens: int = 0,
                 reasoning_tokens: int = 0, model: str | None = None,
                 responder: Callable[[dict], str] | None = None):
        if isinstance(usage, str) and usage not in USAGE_MODES:
            raise ValueError(f"usage must be one of {USAGE_MODES} or a dict, not {usage!r}")
        self.port = port
        self.defaults = dict(delay=delay, usage=usage, cached_tokens=cached_tokens,
                             reasoning_tokens=reasoning_tokens, model=model)
        self.responder = responder or default_content
        self._lock = threading.Lock()
        self._queue: list[Reply] = []
        self._logs: list[RequestLog] = []
        self._httpd: _FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # lifecycle
    def start(self) -> "FakeLLMServer":
        """Bind and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._httpd = _FakeHTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FakeLLMServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns, self._connections = list(self._connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The api_base to give a client: ``http://127.0.0.1:PORT/v1``."""
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def lm(self, model: str = "openai/gpt-4o-mini", **kwargs):
        """A ``dspy.LM`` pointed at this server (cache off unless given)."""
        import dspy

        kwargs.setdefault("cache", False)
        kwargs.setdefault("api_key", "test")
        return dspy.LM(model, api_base=self.url, **kwargs)

    # scripting and inspection
    def enqueue(self, *replies: Reply | str) -> None:
        """Queue replies, consumed FIFO by the next requests (a str is Reply(content=...))."""
        with self._lock:
            self._queue.extend(r if isinstance(r, Reply) else Reply(content=r) for r in replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RequestLog]:
        """Snapshot of the request log, in arrival order."""
        with self._lock:
            return list(self._logs)

    @property
    def answered(self) -> int:
        """Requests answered with HTTP 200."""
        return sum(1 for r in self.requests if r.status == 200 and r.finished is not None)

    def usage_totals(self) -> dict[str, int]:
        """Sum of the usage fields actually sent in 200 answers (missing fields count 0)."""
        totals = dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
                                "reasoning_tokens"), 0)
        for r in self.requests:
            if r.status != 200 or not isinstance(r.usage, dict):
                continue
            u = r.usage
            details = {"cached_tokens": (u.get("prompt_tokens_details") or {}),
                       "reasoning_tokens": (u.get("completion_tokens_details") or {})}
            for key in totals:
                source = details.get(key, u)
                val = source.get(key) if isinstance(source, dict) else None
                if isinstance(val, int) and not isinstance(val, bool):
                    totals[key] += val
        return totals

    def reset(self) -> None:
        """Clear scripted replies and the request log."""
        with self._lock:
            self._queue.clear()
            self._logs.clear()

    # internals used by the handler
    def _arrive(self, path: str, body: Any, headers: dict) -> tuple[RequestLog, Reply]:
        with self._lock:
            log = RequestLog(index=len(self._logs), path=path, body=body, headers=headers,
                             started=time.monotonic(), stream=bool(isinstance(body, dict) and body.get("stream")))
            self._logs.append(log)
            return log, (self._queue.pop(0) if self._queue else Reply())

    def _pick(self, reply: Reply, name: str):
        value = getattr(reply, name)
        return self.defaults[name] if value is None else value

    def _usage(self, reply: Reply, prompt: int, completion: int) -> dict | None:
        mode = self._pick(reply, "usage")
        if isinstance(mode, dict):
            return mode
        if mode == "none":
            return None
        if mode == "partial":
            return {"prompt_tokens": prompt, "completion_tokens": completion}
        cached = max(0, min(self._pick(reply, "cached_tokens"), prompt))
        reasoning = max(0, min(self._pick(reply, "reasoning_tokens"), completion))
        return {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def _completion(self, log: RequestLog, reply: Reply,
                    body: dict | None = None) -> tuple[list[str], str, dict | None]:
        """(choice contents, model, usage) for a 200 answer."""
        body = log.body if body is None else body
        asked = body.get("n")
        n = asked if isinstance(asked, int) and asked > 1 else 1
        contents = [reply.content if reply.content is not None else self.responder(body) for _ in range(n)]
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else count_tokens(body.get("messages") or [])
        completion = reply.completion_tokens if reply.completion_tokens is not None else \
            sum(max(1, len(c.split())) for c in contents)
        model = self._pick(reply, "model") or dated(str(body.get("model") or "gpt-4o-mini"))
        return contents, model, self._usage(reply, prompt, completion)

    def _answer(self, endpoint: str, log: RequestLog, reply: Reply) -> dict:
        """The 200 body of a Responses API or embeddings request (chat is answered by the handler)."""
        body = log.body
        if endpoint == "/embeddings":
            texts = embedding_inputs(body)
            tokens = reply.prompt_tokens if reply.prompt_tokens is not None else embedding_tokens(texts)
            mode = self._pick(reply, "usage")
            usage = mode if isinstance(mode, dict) else None if mode == "none" else \
                {"prompt_tokens": tokens} if mode == "partial" else {"prompt_tokens": tokens, "total_tokens": tokens}
            log.model = self._pick(reply, "model") or str(body.get("model") or "text-embedding-3-small")
            log.usage, log.content = usage, [f"{len(texts)} embeddings"]
            return embeddings_body(texts, log.model, usage, body.get("encoding_format"))
        chat = responses_as_chat(body) if endpoint == "/responses" else \
            {"messages": [{"role": "user", "content": json.dumps(body.get("state"))}], "model": "jev-latest"}
        contents, log.model, usage = self._completion(log, reply, chat)
        log.usage, log.content = responses_usage(usage), contents[:1]
        if endpoint == "/systemone":
            log.usage = {k: v for k, v in (log.usage or {}).items() if k in ("input_tokens", "output_tokens")} or None
            return system_one_body(body, log.model, log.usage)
        return responses_body(log.index, contents[0], log.model, log.usage)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLMServer/1.0"
    # Headers and body go out as two writes: with Nagle on, the body waits for the client's delayed ACK of the
    # headers (~40 ms per request on Linux keep-alive connections).
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self):
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _send_json(self, status: int, payload: Any, headers: dict | None = None, log: RequestLog | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, val in (headers or {}).items():
            self.send_header(key, str(val))
        self.end_headers()
        if log is not None:  # stamped before the last byte, so a client never sees an unfinished log
            log.finished = time.monotonic()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/models"):
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "system"} for m in DATED_MODELS]
            return self._send_json(200, {"object": "list", "data": models})
        self._send_json(404, error_body(404, f"Unknown path {self.path}"))

    def do_POST(self):
        fake: FakeLLMServer = self.server.fake
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        endpoint = next((e for e in ENDPOINTS if path.rstrip("/").endswith(e)), None)
        if endpoint is None:
            return self._send_json(404, error_body(404, f"Unknown path {self.path}"))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        log, reply = fake._arrive(path, body, dict(self.headers.items()))
        try:
            time.sleep(max(0.0, float(fake._pick(reply, "delay"))))
            if not isinstance(body, dict):
                log.status = 400
                return self._send_json(400, error_body(400, "We could not parse the JSON body of your request."), log=log)
            if reply.status != 200:
                log.status = reply.status
                payload = reply.error_body if reply.error_body is not None else error_body(reply.status)
                return self._send_json(reply.status, payload, reply.headers, log)
            if endpoint != "/chat/completions":
                answer = fake._answer(endpoint, log, reply)
                log.status = 200
                return self._send_json(200, answer, reply.headers, log)
            contents, model, usage = fake._completion(log, reply)
            log.model, log.content = model, contents
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage")) and not reply.ignore_include_usage
                log.usage = usage if include else None
                log.status = 200
                self._stream(log, contents, model, usage if include else None, include, reply.headers)
            else:
                log.usage, log.status = usage, 200
                self._send_json(200, completion_body(log.index, contents, model, usage, reply.service_tier or "default"), reply.headers, log)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if log.finished is None:
                log.finished = time.monotonic()

    def _stream(self, log, contents, model, usage, include_usage, headers):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for key, val in headers.items():
            self.send_header(key, str(val))
        self.end_headers()
        base = {"id": f"chatcmpl-fake{log.index:06d}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": "fp_fake", "service_tier": "default"}
        if include_usage:
            base["usage"] = None  # OpenAI sends usage: null on every chunk before the last

        def chunk(choices, **extra) -> bytes:  # one SSE event as one HTTP chunk
            data = f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n".encode()
            return b"%x\r\n%s\r\n" % (len(data), data)

        for i, content in enumerate(contents):
            self.wfile.write(chunk([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                                     "logprobs": None, "finish_reason": None}]))
            for piece in split_content(content):
                self.wfile.write(chunk([{"index": i, "delta": {"content": piece}, "logprobs": None,
                                         "finish_reason": None}]))
        tail = [chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"}]) for i in range(len(contents))]
        if usage is not None:
            tail.append(chunk([], usage=usage))
        done = b"data: [DONE]\n\n"
        tail.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        log.finished = time.monotonic()
        self.wfile.write(b"".join(tail))
