"""What the fake server answers: OpenAI's bodies and error shapes, and replies DSPy's adapters parse."""

from __future__ import annotations

import ast
import json
import re
import time
from typing import Any

USAGE_MODES = ("full", "none", "partial")

# Requested model -> the dated snapshot OpenAI reports back in `model`.
DATED_MODELS = {
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

ERRORS = {  # status -> (type, code, message), OpenAI's spellings
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def count_tokens(messages: list) -> int:
    """Deterministic prompt "tokens": whitespace words in every message + 4 per message."""
    return sum(4 + len(message_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def dspy_reply(fields: dict[str, Any]) -> str:
    """ChatAdapter-formatted content: ``[[ ## name ## ]]`` per field, then ``completed``."""
    out = []
    for name, value in fields.items():
        if not isinstance(value, str):
            value = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        out.append(f"[[ ## {name} ## ]]\n{value}\n\n")
    return "".join(out) + "[[ ## completed ## ]]"


def dated(model: str) -> str:
    if re.search(r"-\d{4}-\d{2}-\d{2}$|-\d{4}$", model):
        return model
    return DATED_MODELS.get(model, model)


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
    system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    users = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
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


def error_body(status: int, message: str | None = None) -> dict:
    type_, code, default = ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                None, f"HTTP {status}"))
    return {"error": {"message": message or default, "type": type_, "param": None, "code": code}}


def split_content(content: str, parts: int = 3) -> list[str]:
    """Content as a few stream deltas that concatenate back to it."""
    if not content:
        return []
    size = max(1, -(-len(content) // parts))
    return [content[i:i + size] for i in range(0, len(content), size)]


def completion_body(index: int, contents: list[str], model: str, usage: dict | None,
                    service_tier: str = "default") -> dict:
    body = {
        "id": f"chatcmpl-fake{index:06d}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"} for i, c in enumerate(contents)],
        "service_tier": service_tier, "system_fingerprint": "fp_fake",
    }
    if usage is not None:
        body["usage"] = usage
    return body


