"""A local OpenAI-compatible chat-completions server for tests and demos.

Standard library only. It answers ``POST .../chat/completions`` (both
``/v1/chat/completions`` and ``/chat/completions``) the way OpenAI does,
including streaming and usage, so a real ``dspy.LM("openai/...")`` can talk
to it over HTTP with either engine::

    with FakeLLMServer() as server:
        lm = server.lm("openai/gpt-4o-mini")
        server.enqueue(Reply(status=429, headers={"Retry-After": "0"}), Reply(cached_tokens=3))
        ...
        server.requests        # what was asked and exactly what usage was sent
"""

from __future__ import annotations

import ast
import json
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FakeLLMServer", "Reply", "RequestLog", "TcpProxy", "count_tokens", "dspy_reply", "usage_row", "via_proxy"]

_USAGE_MODES = ("full", "none", "partial")

# Requested model -> the dated snapshot OpenAI reports back in `model`.
_DATED_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "o1": "o1-2024-12-17",
    "o3-mini": "o3-mini-2025-01-31",
    "o3": "o3-2025-04-16",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
}

_ERRORS = {  # status -> (type, code, message), OpenAI's spellings
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


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

    def __post_init__(self):
        if isinstance(self.usage, str) and self.usage not in _USAGE_MODES:
            raise ValueError(f"usage must be one of {_USAGE_MODES} or a dict, not {self.usage!r}")


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


# ─── Helpers ────────────────────────────────────────────────────────────


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def count_tokens(messages: list) -> int:
    """Deterministic prompt "tokens": whitespace words in every message + 4 per message."""
    return sum(4 + len(_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def dspy_reply(fields: dict[str, Any]) -> str:
    """ChatAdapter-formatted content: ``[[ ## name ## ]]`` per field, then ``completed``."""
    out = []
    for name, value in fields.items():
        if not isinstance(value, str):
            value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        out.append(f"[[ ## {name} ## ]]\n{value}\n\n")
    return "".join(out) + "[[ ## completed ## ]]"


def _dated(model: str) -> str:
    if re.search(r"-\d{4}-\d{2}-\d{2}$|-\d{4}$", model):
        return model
    return _DATED_MODELS.get(model, model)


def _output_fields(system: str) -> list[tuple[str, str]]:
    """(name, type) pairs from DSPy's "Your output fields are:" section."""
    _, found, rest = system.partition("Your output fields are:")
    if not found:
        return []
    rest = rest.split("All interactions will be structured", 1)[0]
    return re.findall(r"^\d+\.\s+`(\w+)`\s+\((.*?)\):", rest, flags=re.MULTILINE)


def _value(name: str, type_: str, sentence: str) -> Any:
    t = type_.strip().lower()
    if name == "next_tool_name":
        return "finish"
    if name == "next_tool_args" or t.startswith("dict"):
        return {}
    if t.startswith("literal["):
        try:
            return ast.literal_eval("[" + type_.strip()[8:-1] + "]")[0]
        except (ValueError, SyntaxError, IndexError):
            return sentence
    if t in ("int", "float"):
        return 42
    if t == "bool":
        return True
    if t.startswith("list"):
        return []
    return sentence


def default_content(body: dict) -> str:
    """A reply DSPy's ChatAdapter / JSONAdapter parses, derived from the request."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    # The first input field's value (text between DSPy's [[ ## field ## ]] markers).
    segments = re.split(r"\[\[ ## .*? ## \]\]", (users[-1] if users else "").split("Respond with", 1)[0])
    question = next((seg for seg in segments if seg.strip()), "")
    sentence = "Answer to: " + " ".join(question.split()[:8])
    fields = _output_fields(system)
    if not fields:
        return sentence
    values = {name: _value(name, type_, sentence) for name, type_ in fields}
    response_format = body.get("response_format") or {}
    wants_json = (isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")) \
        or "Outputs will be a JSON object" in system
    if wants_json:
        return json.dumps(values)
    return dspy_reply({k: (json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in values.items()})


# ─── Server ─────────────────────────────────────────────────────────────


class FakeLLMServer:
    """OpenAI-compatible chat-completions server on 127.0.0.1 in a daemon thread."""

    def __init__(self, port: int = 0, *, delay: float = 0.0, usage: str | dict = "full", cached_tokens: int = 0,
                 reasoning_tokens: int = 0, model: str | None = None,
                 responder: Callable[[dict], str] | None = None):
        if isinstance(usage, str) and usage not in _USAGE_MODES:
            raise ValueError(f"usage must be one of {_USAGE_MODES} or a dict, not {usage!r}")
        self.port = port
        self.defaults = dict(delay=delay, usage=usage, cached_tokens=cached_tokens,
                             reasoning_tokens=reasoning_tokens, model=model)
        self.responder = responder or default_content
        self._lock = threading.Lock()
        self._queue: list[Reply] = []
        self._logs: list[RequestLog] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # lifecycle
    def start(self) -> "FakeLLMServer":
        """Bind and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
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

    def _completion(self, log: RequestLog, reply: Reply) -> tuple[list[str], str, dict | None]:
        """(choice contents, model, usage) for a 200 answer."""
        body = log.body
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 1 else 1
        contents = [reply.content if reply.content is not None else self.responder(body) for _ in range(n)]
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else count_tokens(body.get("messages") or [])
        completion = reply.completion_tokens if reply.completion_tokens is not None else \
            sum(max(1, len(c.split())) for c in contents)
        model = self._pick(reply, "model") or _dated(str(body.get("model") or "gpt-4o-mini"))
        return contents, model, self._usage(reply, prompt, completion)


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
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "system"} for m in _DATED_MODELS]
            return self._send_json(200, {"object": "list", "data": models})
        self._send_json(404, _error(404, f"Unknown path {self.path}"))

    def do_POST(self):
        fake: FakeLLMServer = self.server.fake
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not path.rstrip("/").endswith("/chat/completions"):
            return self._send_json(404, _error(404, f"Unknown path {self.path}"))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        log, reply = fake._arrive(path, body, dict(self.headers.items()))
        try:
            time.sleep(max(0.0, float(fake._pick(reply, "delay"))))
            if not isinstance(body, dict):
                log.status = 400
                return self._send_json(400, _error(400, "We could not parse the JSON body of your request."), log=log)
            if reply.status != 200:
                log.status = reply.status
                payload = reply.error_body if reply.error_body is not None else _error(reply.status)
                return self._send_json(reply.status, payload, reply.headers, log)
            contents, model, usage = fake._completion(log, reply)
            log.model, log.content = model, contents
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage")) and not reply.ignore_include_usage
                log.usage = usage if include else None
                log.status = 200
                self._stream(log, contents, model, usage if include else None, include, reply.headers)
            else:
                log.usage, log.status = usage, 200
                self._send_json(200, _completion_body(log, contents, model, usage), reply.headers, log)
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
            for piece in _split(content):
                self.wfile.write(chunk([{"index": i, "delta": {"content": piece}, "logprobs": None,
                                         "finish_reason": None}]))
        tail = [chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"}]) for i in range(len(contents))]
        if usage is not None:
            tail.append(chunk([], usage=usage))
        done = b"data: [DONE]\n\n"
        tail.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        log.finished = time.monotonic()
        self.wfile.write(b"".join(tail))


def _error(status: int, message: str | None = None) -> dict:
    type_, code, default = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                None, f"HTTP {status}"))
    return {"error": {"message": message or default, "type": type_, "param": None, "code": code}}


def _split(content: str, parts: int = 3) -> list[str]:
    """Content as a few stream deltas that concatenate back to it."""
    if not content:
        return []
    size = max(1, -(-len(content) // parts))
    return [content[i:i + size] for i in range(0, len(content), size)]


def _completion_body(log: RequestLog, contents: list[str], model: str, usage: dict | None) -> dict:
    body = {
        "id": f"chatcmpl-fake{log.index:06d}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"} for i, c in enumerate(contents)],
        "service_tier": "default", "system_fingerprint": "fp_fake",
    }
    if usage is not None:
        body["usage"] = usage
    return body


def usage_row(**values: Any) -> dict:
    """A complete ``token_usage`` row dict for seeding a store with ``Store.insert_rows([...])`` in tests.

    Defaults describe a priced gpt-4o-mini call made now; pass any column to override it.
    """
    import uuid
    from datetime import datetime, timezone
    from decimal import Decimal

    row = dict(call_uuid=uuid.uuid4().hex, session_id="seed", call_index=0, user_id=None, guild_id=None,
               channel_id=None, feature=None, module=None, model="openai/gpt-4o-mini", response_model=None,
               prompt_tokens=100, completion_tokens=20, total_tokens=None, cached_tokens=0, reasoning_tokens=0,
               cost_usd=Decimal("0.000027"), cost_source="price_map", cache_hit=False, usage_reported=True,
               error=None, latency_ms=10, created_at=datetime.now(timezone.utc))
    unknown = set(values) - set(row)
    if unknown:
        raise TypeError(f"usage_row: unknown columns {sorted(unknown)}")
    row.update(values)
    if row["total_tokens"] is None and row["prompt_tokens"] is not None and row["completion_tokens"] is not None:
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    return row


class TcpProxy:
    """A real network outage for tests: forwards 127.0.0.1:<port> to a database server. ``stop()`` closes the listener (new connections are
    refused) and cuts every open connection mid-stream; ``start()`` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.accepted = 0

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):  # the port may linger briefly after a stop
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"could not listen on 127.0.0.1:{self.port} again")
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    @property
    def up(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(source)
                self._conns.discard(sink)


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host:port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))
