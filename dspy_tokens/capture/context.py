"""Who an LM call is for: ``usage_context`` binds user, guild, channel, feature and session.

The values travel in DSPy's own context overrides (``dspy.context`` storage), because DSPy copies those into
``dspy.Parallel``/``Evaluate`` worker threads while plain ContextVars do not reach them. asyncio tasks,
``asyncio.to_thread`` and ``dspy.asyncify`` copy the context as well. A raw ``threading.Thread`` copies nothing:
wrap its target with :func:`propagate`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, TypeVar

from .._ids import checked_id
from .._metadata import metadata_text
from . import dspy_internals, watch

CONTEXT_KEY = "dspy_tokens_usage"
RUN_KEY = "dspy_tokens_run"  # the guarded run (limits.run.GuardedRun) whose reservation the calls top up
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Attribution:
    """The attribution stored on every call made inside one ``usage_context``."""

    user_id: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    feature: str | None = None
    session_id: str | None = None
    metadata: str | None = None  # compact JSON text (see dspy_tokens._metadata), merged over the outer context's
    # Shared by every call of an explicit session, across threads: call indexes 0, 1, 2...
    _indexes: itertools.count = field(default_factory=itertools.count, compare=False, repr=False)
    # How many LM calls a tracker saw inside the context (shared with the contexts nested in it).
    _seen: list = field(default_factory=lambda: [0], compare=False, repr=False)

    def next_index(self) -> int:
        return next(self._indexes)  # itertools.count is atomic under the GIL

    def mark_seen(self) -> None:
        self._seen[0] += 1

    @property
    def seen(self) -> int:
        return self._seen[0]


def current_attribution() -> Attribution | None:
    """The innermost ``usage_context`` bound here, or ``None``."""
    return dspy_internals.overrides().get(CONTEXT_KEY)


def configured_model() -> str | None:
    """The model of the LM configured here (``dspy.configure``/``dspy.context``): what a call made now would use."""
    return dspy_internals.configured_model()


def current_run():
    """The guarded run bound here (``tracker.guard``), or ``None``."""
    return dspy_internals.overrides().get(RUN_KEY)


class bind_run:  # noqa: N801
    """Bind a guarded run for the block (a guard does it), in DSPy's context overrides like ``usage_context``."""

    def __init__(self, run):
        self.run, self._tokens = run, []

    def __enter__(self):
        overrides = dspy_internals.overrides()
        new = type(overrides)(overrides)
        new[RUN_KEY] = self.run
        self._tokens.append(dspy_internals.set_overrides(new))
        return self.run

    def __exit__(self, *exc):
        dspy_internals.reset_overrides(self._tokens.pop())


def bind_lm(model_id: str, entry=None):
    """``dspy.context(lm=...)`` on ``model_id``, built like the LM configured here (same endpoint, key, cache and
    options), with the configured model's ``max_tokens`` if it gives one: how a guard runs on a fallback model."""
    import dspy

    current = configured_lm()
    kwargs = dict(getattr(current, "kwargs", None) or {})
    if entry is not None and getattr(entry, "max_tokens", None):
        kwargs["max_tokens"] = entry.max_tokens
    options = {"cache": getattr(current, "cache", True), "model_type": getattr(current, "model_type", "chat")}
    return dspy.context(lm=dspy.LM(model_id, **options, **kwargs))


def configured_lm():
    """The LM configured here: what a call made now would use (its ``kwargs`` hold ``max_tokens``)."""
    return dspy_internals.configured_lm()


def _merge(outer: Attribution | None, **values) -> Attribution:
    given = {k: v for k, v in values.items() if v is not None}
    for name in ("user_id", "guild_id", "channel_id"):
        if name in given:
            given[name] = checked_id("usage_context", name, given[name])
    if "feature" in given:
        given["feature"] = str(given["feature"])[:100]
    if "session_id" in given:
        given["session_id"] = str(given["session_id"])[:64]
    if "metadata" in given:  # an inner context's keys replace the outer one's; the size bound holds for the merge
        inherited = json.loads(outer.metadata) if outer is not None and outer.metadata else {}
        given["metadata"] = metadata_text({**inherited, **given["metadata"]})
    if outer is None:
        return Attribution(**given)
    # Nested contexts refine the outer one; a new explicit session restarts the call index.
    merged = replace(outer, **given)
    return replace(merged, _indexes=itertools.count()) if "session_id" in given else merged


class usage_context:  # noqa: N801 - used like contextlib's lower-case helpers
    """Attribute every LM call inside to a user/guild/channel/feature, as a context manager or decorator.

    ``session_id`` groups all calls inside into one session (e.g. a Discord interaction id); without it each
    top-level DSPy module run is its own session. ``metadata`` (``{"team": "a", "experiment": "b"}``) is stored
    with each call: at most 16 keys of letters, digits, ``_``, ``-``; string (up to 200 characters) or number
    values; 2,048 characters as JSON. Anything else is a ``ValueError`` here, where it is written.
    """

    def __init__(self, *, user_id: int | str | None = None, guild_id: int | str | None = None,
                 channel_id: int | str | None = None, feature: str | None = None,
                 session_id: str | int | None = None, metadata: Mapping[str, str | int | float] | None = None):
        self._values = dict(user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature,
                            session_id=session_id, metadata=metadata)
        _merge(None, **self._values)  # validate now: a bad id fails where it is written
        self._tokens: list[contextvars.Token] = []
        self._opened: list[tuple[Attribution, object]] = []  # (attribution, newest history entry at entry)

    def __enter__(self) -> Attribution:
        overrides = dspy_internals.overrides()
        attribution = _merge(overrides.get(CONTEXT_KEY), **self._values)
        # Copy-on-write, adding only our key: dspy.context() would also freeze the global config into the block.
        new = type(overrides)(overrides)
        new[CONTEXT_KEY] = attribution
        self._tokens.append(dspy_internals.set_overrides(new))
        self._opened.append((attribution, watch.history_mark()))
        return attribution

    def __exit__(self, *exc: object) -> None:
        dspy_internals.reset_overrides(self._tokens.pop())
        attribution, mark = self._opened.pop()
        watch.warn_if_unrecorded(mark, attribution.seen > 0)

    async def __aenter__(self) -> Attribution:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __call__(self, fn: F) -> F:
        values = self._values
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                with usage_context(**values):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with usage_context(**values):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]


def propagate(fn: F) -> F:
    """Wrap ``fn`` so it runs with the caller's context (attribution, DSPy settings, parent call) in any thread.

    Use for raw ``threading.Thread``/``ThreadPoolExecutor`` targets, which otherwise start with an empty context.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return ctx.copy().run(fn, *args, **kwargs)
    return run  # type: ignore[return-value]
