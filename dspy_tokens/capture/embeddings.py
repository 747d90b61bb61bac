"""Embeddings: ``dspy.Embedder("openai/text-embedding-3-small")`` calls ``litellm.embedding`` / ``aembedding``
directly and fires no DSPy callback, so they are seen through LiteLLM's own callback interface instead: one
``CustomLogger`` in ``litellm.callbacks``, added once per process when the first recording tracker is made (or,
when LiteLLM is not imported yet, right after its import: a tracker never imports LiteLLM itself, ~2 s).

The logger records a request for every :class:`~dspy_tokens.capture.CallRecorder` among the DSPy callbacks in force
where the request starts (``dspy.configure(callbacks=[tracker])``, ``dspy.context(callbacks=...)``), attributed by
the ``usage_context`` there. Attribution is taken before the request (LiteLLM runs its success callbacks on a worker
thread); a request made inside an LM call the recorder already observes is that call's, never recorded twice.
Embeddings DSPy answers from its own cache reach no provider and LiteLLM: they are not recorded.
"""

from __future__ import annotations

import importlib.abc
import json
import importlib.util
import logging
import sys
import threading
from collections import OrderedDict
from typing import Any, Callable

from .callback import CallRecorder, StartedCall
from .dspy_internals import configured_callbacks

log = logging.getLogger("dspy_tokens")

EMBEDDING_CALLS = ("embedding", "aembedding")
MAX_PENDING = 10_000  # requests started and not finished (their end lost: a crash inside LiteLLM)

_pending: OrderedDict[str, list[tuple[CallRecorder, StartedCall]]] = OrderedDict()
_lock = threading.Lock()
_installed = False


def install() -> None:
    """Add the embeddings logger to ``litellm.callbacks`` once (now, or when LiteLLM is first imported)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    if "litellm" in sys.modules:
        _register(sys.modules["litellm"])
    elif importlib.util.find_spec("litellm") is not None:
        sys.meta_path.insert(0, _AfterImport("litellm", _register))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` right after ``name`` is first imported (its loader executes it), then steps aside."""

    def __init__(self, name: str, then: Callable[[Any], None]):
        self.name, self.then, self._finding = name, then, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)  # the finders after this one
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module, then = spec.loader.exec_module, self.then

        def exec_then(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            then(module)
        spec.loader.exec_module = exec_then  # this spec's own loader instance
        return spec


def _register(litellm: Any) -> None:
    try:
        from litellm.integrations.custom_logger import CustomLogger
    except ImportError:  # a LiteLLM without the callback interface: nothing calls litellm.embedding then
        return
    logger_class = _logger_class(CustomLogger)
    if not any(isinstance(cb, logger_class) for cb in litellm.callbacks):
        litellm.callbacks.append(logger_class())


def _model_of(kwargs: dict) -> str:
    model = str(kwargs.get("model") or "unknown")
    provider = kwargs.get("custom_llm_provider")
    return model if not provider or model.startswith(f"{provider}/") else f"{provider}/{model}"


def begin(kwargs: dict) -> None:
    """Before an embedding request, on the caller's thread: place it in each recorder's sessions."""
    call_id = str(kwargs.get("litellm_call_id") or "")
    if kwargs.get("call_type") not in EMBEDDING_CALLS or not call_id or call_id in _pending:
        return  # already pending: LiteLLM's pre-call of a retry, placed at its first attempt
    found = [(recorder, started) for recorder in configured_callbacks() if isinstance(recorder, CallRecorder)
             for started in [recorder.begin_request(call_id)] if started is not None]
    if not found:
        return
    with _lock:
        _pending[call_id] = found
        if len(_pending) > MAX_PENDING:
            _pending.popitem(last=False)


def finish(kwargs: dict, response: Any, error: BaseException | None) -> None:
    """After the request (any thread): one observed call per recorder that placed it, exactly once."""
    with _lock:
        found = _pending.pop(str(kwargs.get("litellm_call_id")), None)
    if not found:
        return
    entry = None if error is not None else _entry(kwargs, response)
    described = None if error is None else f"{type(error).__name__}: {error}"[:2000]
    for recorder, started in found:
        try:
            recorder.finish_request(str(kwargs["litellm_call_id"]), started, _model_of(kwargs), entry, described,
                                    "embedding")
        except Exception:  # never raise into LiteLLM: the request itself succeeded
            log.exception("dspy-tokens: could not record embedding request %s", kwargs.get("litellm_call_id"))


def answered(kwargs: dict) -> None:
    """Right after the provider answered, inline on the caller's thread or task (LiteLLM's post-call): finish the
    request when the raw answer carries usage. LiteLLM runs async success callbacks later, from a queue that an
    ending event loop may never drain; the success callbacks remain for answers without readable usage."""
    if kwargs.get("call_type") not in EMBEDDING_CALLS or str(kwargs.get("litellm_call_id")) not in _pending:
        return
    response = kwargs.get("original_response")
    if isinstance(response, (str, bytes)):
        try:
            response = json.loads(response)
        except ValueError:
            return
    if _usage_of(response).get("prompt_tokens") is not None:
        finish(kwargs, response, None)


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def _usage_of(response: Any) -> dict:
    usage = _field(response, "usage")
    if not isinstance(usage, dict):
        usage = usage.model_dump() if hasattr(usage, "model_dump") else {}
    return {key: value for key, value in usage.items() if value is not None}


def _entry(kwargs: dict, response: Any) -> dict:
    """A history-entry-like dict: embeddings have no output tokens (0), a cache hit of LiteLLM's own has no usage."""
    model = _field(response, "model")
    if kwargs.get("cache_hit") is True:
        return {"usage": {}, "cache_hit": True, "response_model": model}
    usage = _usage_of(response)
    if usage.get("prompt_tokens") is not None:
        usage["completion_tokens"] = usage.get("completion_tokens") or 0
    return {"usage": usage, "response_model": model}


def _logger_class(base: type) -> type:
    global _LOGGER
    if _LOGGER is None:
        class EmbeddingRecorder(base):
            """dspy-tokens: records embedding requests (``dspy.Embedder``) for the trackers in DSPy's callbacks."""

            def log_pre_api_call(self, model, messages, kwargs):
                _safely(begin, kwargs)

            def log_post_api_call(self, kwargs, response_obj, start_time, end_time):
                _safely(answered, kwargs)

            def log_success_event(self, kwargs, response_obj, start_time, end_time):
                _safely(finish, kwargs, response_obj, None)

            def log_failure_event(self, kwargs, response_obj, start_time, end_time):
                _safely(finish, kwargs, None, kwargs.get("exception") or RuntimeError("embedding request failed"))

            async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
                _safely(finish, kwargs, response_obj, None)

            async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
                _safely(finish, kwargs, None, kwargs.get("exception") or RuntimeError("embedding request failed"))

        _LOGGER = EmbeddingRecorder
    return _LOGGER


_LOGGER: type | None = None


def _safely(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("dspy-tokens: the embeddings logger failed; the request is not recorded")
