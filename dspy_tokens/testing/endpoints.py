"""The fake server's other OpenAI endpoints: the Responses API (``/v1/responses``) and embeddings
(``/v1/embeddings``), with the usage shapes those APIs report."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from typing import Any

EMBEDDING_DIMENSIONS = 8


def responses_as_chat(body: dict) -> dict:
    """A Responses API request seen as a chat request (``instructions`` + ``input`` → ``messages``), so the
    default responder answers it as it answers chat."""
    messages: list[dict] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        messages.extend(item for item in items if isinstance(item, dict) and "role" in item)
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    chat = {"messages": messages, "model": body.get("model")}
    if isinstance(text_format, dict):
        chat["response_format"] = {"type": text_format.get("type")}
    return chat


def responses_usage(chat_usage: dict | None) -> dict | None:
    """The Responses API's usage shape for the counts a chat answer would report (dicts sent verbatim)."""
    if chat_usage is None or "prompt_tokens" not in chat_usage:
        return chat_usage
    prompt, completion = chat_usage["prompt_tokens"], chat_usage["completion_tokens"]
    usage: dict[str, Any] = {"input_tokens": prompt, "output_tokens": completion}
    if "total_tokens" in chat_usage:  # "partial" sends only the two counts
        usage["total_tokens"] = chat_usage["total_tokens"]
        usage["input_tokens_details"] = {"cached_tokens": chat_usage["prompt_tokens_details"]["cached_tokens"]}
        usage["output_tokens_details"] = {
            "reasoning_tokens": chat_usage["completion_tokens_details"]["reasoning_tokens"]}
    return usage


def responses_body(index: int, content: str, model: str, usage: dict | None) -> dict:
    body = {
        "id": f"resp_fake{index:06d}", "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": model, "error": None, "incomplete_details": None, "instructions": None, "metadata": {},
        "output": [{"type": "message", "id": f"msg_fake{index:06d}", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": content, "annotations": []}]}],
        "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "service_tier": "default", "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled", "user": None,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def embedding_inputs(body: dict) -> list[str]:
    items = body.get("input")
    if isinstance(items, str):
        return [items]
    if isinstance(items, list):
        return [item if isinstance(item, str) else str(item) for item in items]
    return []


def embedding_tokens(texts: list[str]) -> int:
    """Deterministic input "tokens" of an embeddings request: whitespace words, at least 1 per input."""
    return sum(max(1, len(text.split())) for text in texts)


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
    return [round(byte / 255.0, 6) for byte in digest[:EMBEDDING_DIMENSIONS]]


def embeddings_body(texts: list[str], model: str, usage: dict | None, encoding_format: Any = None) -> dict:
    """OpenAI's embeddings answer; base64 vectors (little-endian float32) when the client asked for them, as the
    OpenAI SDK does by default."""
    data = []
    for index, text in enumerate(texts):
        vector: Any = _vector(text)
        if encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if usage is not None:
        body["usage"] = usage
    return body


def system_one_body(body: dict, model: str, usage: dict | None) -> dict:
    """TypeSafe's System One answer (``POST /v1/systemone``, ``dspy.experimental.TypeSafe``): one answer per
    question, of the question's type; usage as input/output tokens."""
    answers = {}
    for name, question in (body.get("questions") or {}).items():
        kind = question.get("type") if isinstance(question, dict) else "noul"
        if kind == "choice":
            criteria = question.get("criteria") or {}
            options = list(criteria) if isinstance(criteria, dict) else list(criteria or [])
            answers[name] = {"type": "choice", "choice": str(options[0]) if options else "", "confidence": 0.9}
        elif kind == "score":
            answers[name] = {"type": "score", "score": 0.5, "confidence": 0.9}
        else:
            answers[name] = {"type": "noul", "noul": 0.9}
    answer: dict[str, Any] = {"model": model, "answers": answers}
    if usage is not None:
        answer["usage"] = usage
    return answer
