"""The DSPy callback: observe every LM call, pair it with its own history entry, and hand it off.

Runs inline on the caller's thread (or the event loop), so it only does dictionary work: no I/O, no pricing.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import watch
from .context import Attribution, current_attribution, current_run
from .dspy_internals import ACTIVE_CALL_ID, BaseCallback, global_history, history_disabled
from .usage import is_cache_hit

log = logging.getLogger("dspy_tokens")

HISTORY_SCAN_DEPTH = 512  # an entry is appended at completion; under heavy concurrency it is still near the end
MAX_OPEN_SESSIONS = 100_000
MAX_CLAIMED = 20_000
NO_ATTRIBUTION = Attribution()


@dataclass(slots=True)
class StartedCall:
    instance: Any
    messages: Any
    prompt: Any
    session_id: str
    call_index: int
    root: str
    attribution: Attribution
    module: str | None
    started: float
    args: dict | None = None  # a decision request's arguments (TypeSafe: state, questions): no messages, no prompt


@dataclass(slots=True)
class ObservedCall:
    """One finished LM call as observed on the caller's thread; turned into a row by the writer."""

    call_uuid: str
    session_id: str
    call_index: int
    attribution: Attribution
    module: str | None
    model: str
    entry: dict | None  # the call's own history entry; None if the call failed or history is off
    error: str | None
    latency_ms: int
    created_at: datetime
    request_type: str = "chat"


#: DSPy's ``model_type`` -> the request type stored; an LM without one (``dspy.experimental.TypeSafe``) is "decision".
REQUEST_TYPES = {"chat": "chat", "text": "completion", "responses": "responses"}


def request_type_of(instance: Any) -> str:
    model_type = getattr(instance, "model_type", None)
    if model_type is None:
        return "decision"
    return REQUEST_TYPES.get(str(model_type), str(model_type)[:20])


class CallRecorder(BaseCallback):
    """Tracks the module tree (sessions, call indexes) and emits one :class:`ObservedCall` per LM call."""

    def __init__(self):
        self._frames: dict[str, tuple[str | None, str]] = {}  # call_id -> (parent call_id, label)
        self._started: dict[str, StartedCall] = {}
        self._session_indexes: dict[str, itertools.count] = {}
        self._claimed: OrderedDict[Any, Any] = OrderedDict()  # uuid -> None; ("entry", id) -> the entry
        self._warned_no_history = False

    def emit(self, call: ObservedCall) -> None:  # pragma: no cover - replaced by the tracker's writer
        raise NotImplementedError

    # DSPy deep-copies programs (optimizers, Parallel); the recorder is shared state, never copied.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- the module tree ---------------------------------------------------------------------------
    def _enter(self, call_id: str, instance: Any) -> None:
        self._frames[call_id] = (ACTIVE_CALL_ID.get(), type(instance).__name__)

    def _exit(self, call_id: str) -> None:
        frame = self._frames.pop(call_id, None)
        if frame is not None and frame[0] is None:  # a top-level run ended: its session is complete
            self._session_indexes.pop(call_id, None)

    def on_module_start(self, call_id, instance, inputs):
        self._enter(call_id, instance)

    def on_module_end(self, call_id, outputs, exception=None):
        self._exit(call_id)

    on_tool_start = on_evaluate_start = on_compile_start = on_module_start
    on_tool_end = on_evaluate_end = on_compile_end = on_module_end

    # -- LM calls ----------------------------------------------------------------------------------
    def on_lm_start(self, call_id, instance, inputs):
        run = current_run()
        if run is not None and run.recorder is self:  # a guarded run: top up its reservation, or stop it
            run.before_call(call_id, instance, inputs.get("messages"), inputs.get("prompt"))
        # A prompt string, or an lm15 Request (DSPy's non-deprecated API: lm(Request) or lm(request=Request))
        prompt = inputs.get("prompt")
        if prompt is None:
            prompt = (inputs.get("kwargs") or {}).get("request")
        messages = inputs.get("messages")
        args = dict(inputs) if messages is None and prompt is None and inputs else None
        self._started[call_id] = self._begin(call_id, instance, messages, prompt, args)

    def _begin(self, call_id: str, instance: Any, messages: Any = None, prompt: Any = None,
               args: dict | None = None) -> StartedCall:
        """Where a request starting now belongs: its session and index, attribution and module path."""
        started = time.perf_counter()
        attribution = current_attribution() or NO_ATTRIBUTION
        attribution.mark_seen()
        labels = []
        root, node = call_id, ACTIVE_CALL_ID.get()
        while node is not None:
            root = node
            frame = self._frames.get(node)
            if frame is None:  # an ancestor we did not see start (callback not global): treat it as the root
                break
            labels.append(frame[1])
            node = frame[0]
        if attribution.session_id is not None:
            session_id, index = attribution.session_id, attribution.next_index()
        else:
            counter = self._session_indexes.get(root)
            if counter is None:
                if len(self._session_indexes) >= MAX_OPEN_SESSIONS:  # roots whose end we never see
                    self._session_indexes.pop(next(iter(self._session_indexes)), None)
                counter = self._session_indexes.setdefault(root, itertools.count())
            session_id, index = root, next(counter)
        return StartedCall(instance, messages, prompt, session_id, index, root, attribution,
                        ">".join(reversed(labels))[-255:] or None, started, args)

    # -- requests DSPy does not call back for (dspy.Embedder: capture.embeddings sees them in LiteLLM) ----------
    def begin_request(self, call_id: str) -> StartedCall | None:
        """Place a request that fires no DSPy callback; None when it is made inside an LM call this recorder
        already observes (that call's own request: recorded once, by the call)."""
        if ACTIVE_CALL_ID.get() in self._started:
            return None
        return self._begin(call_id, None)

    def finish_request(self, call_id: str, started: StartedCall, model: str, entry: dict | None, error: str | None,
                       request_type: str) -> None:
        if started.root == call_id:  # a top-level request is its own session
            self._session_indexes.pop(call_id, None)
        self.emit(ObservedCall(
            call_uuid=call_id, session_id=started.session_id, call_index=started.call_index,
            attribution=started.attribution, module=started.module, model=model, entry=entry, error=error,
            latency_ms=int((time.perf_counter() - started.started) * 1000), created_at=datetime.now(timezone.utc),
            request_type=request_type))

    def on_lm_end(self, call_id, outputs, exception=None):
        started = self._started.pop(call_id, None)
        if started is None:
            return
        latency_ms = int((time.perf_counter() - started.started) * 1000)
        if started.root == call_id:  # a top-level LM call is its own session
            self._session_indexes.pop(call_id, None)
        entry = None
        if exception is None:
            try:
                entry = self._find_entry(started)
            except Exception:  # never lose the call, nor raise into DSPy: record it without usage
                log.exception("dspy-tokens: could not find the history entry of LM call %s; recorded without usage",
                              call_id)
        run = current_run()
        if run is not None and run.recorder is self:
            run.after_call(call_id, entry, cache_hit=entry is not None and is_cache_hit(entry))
        self.emit(ObservedCall(
            call_uuid=call_id, session_id=started.session_id, call_index=started.call_index,
            attribution=started.attribution, module=started.module,
            model=str(getattr(started.instance, "model", None) or type(started.instance).__name__),
            entry=entry, error=_describe(exception) if exception is not None else None,
            latency_ms=latency_ms, created_at=datetime.now(timezone.utc),
            request_type=request_type_of(started.instance)))

    def _find_entry(self, started: StartedCall) -> dict | None:
        """This call's own history entry: matched by identity of its messages list, never ``history[-1]``."""
        for source in (lambda: getattr(started.instance, "history", None), global_history):
            history = source()  # DSPy's global history is read only when the LM's own has no entry
            if not history:
                continue
            for entry in itertools.islice(reversed(history), HISTORY_SCAN_DEPTH):
                if started.messages is not None:
                    if entry.get("messages") is not started.messages:
                        continue
                elif started.prompt is not None:
                    if entry.get("prompt") is not started.prompt and entry.get("request") is not started.prompt:
                        continue  # an lm15 Request is kept as entry["request"]; its messages are a converted copy
                elif not _same_request(entry, started.args):
                    continue
                uuid = entry.get("uuid")
                # TypeSafe's entries carry no uuid: claimed by identity, kept referenced so the id is not reused
                key = uuid if uuid is not None else ("entry", id(entry))
                if key in self._claimed:
                    continue
                self._claimed[key] = entry if uuid is None else None
                if len(self._claimed) > MAX_CLAIMED:
                    self._claimed.popitem(last=False)
                if uuid is not None:
                    watch.note_recorded(uuid)
                return entry
        if not self._warned_no_history:
            self._warned_no_history = True
            reason = ("dspy history is disabled (disable_history=True)" if history_disabled()
                      else "its history entry was not found")
            log.warning("dspy-tokens: an LM call was recorded without usage because %s; such calls are stored "
                        "with usage_reported=false", reason)
        return None


def _same_request(entry: dict, args: dict | None) -> bool:
    """A decision client's entry (``dspy.experimental.TypeSafe``: ``messages`` None) keeps a deep copy of the call's
    arguments in ``entry["request"]``: equal values, never the same objects."""
    request = entry.get("request")
    if not args or entry.get("messages") is not None or not isinstance(request, dict):
        return False
    return all(name in request and request[name] == value for name, value in args.items())


def _describe(exception: BaseException) -> str:
    return f"{type(exception).__name__}: {exception}"[:2000]
