"""Who is asking: the admin token, the read token, or nobody.

``Authorization: Bearer <token>`` on every call; the dashboard's login turns a token into a signed session cookie
(HttpOnly, SameSite=Strict), accepted for reads only, so a state-changing call always carries the token itself or
the dashboard's per-session form key. Tokens are compared in constant time; a wrong or missing one is a bare 401.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import HTTPException, Request

from dspy_tokens import ConfigurationError
from dspy_tokens.reports import Pseudonyms, json_ready

ADMIN, READ = "admin", "read"
ADMIN_ENV, READ_ENV = "DSPY_TOKENS_ADMIN_TOKEN", "DSPY_TOKENS_READ_TOKEN"
MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "dspy_tokens_session"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = ("GET", "HEAD")
_FIX = "use a long random string, e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\""


@dataclass(frozen=True)
class Tokens:
    """The configured tokens. Neither: the app is open (reads only, ids pseudonymised; admin calls refused)."""

    admin: str | None = None
    read: str | None = None

    @classmethod
    def of(cls, admin_token: str | None, read_token: str | None) -> "Tokens":
        found = {}
        for name, value in (("admin_token", admin_token), ("read_token", read_token)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError("create_app", name, type(value).__name__, "must be a string")
            value = (value or "").strip() or None
            if value is not None and len(value) < MIN_TOKEN_LENGTH:
                raise ConfigurationError("create_app", name, f"a {len(value)}-character token",
                                         f"needs at least {MIN_TOKEN_LENGTH} characters ({_FIX})")
            found[name] = value
        if found["admin_token"] is not None and found["admin_token"] == found["read_token"]:
            raise ConfigurationError("create_app", "read_token", "the same string as admin_token",
                                     "must differ from admin_token (else every reader is an admin)")
        return cls(found["admin_token"], found["read_token"])

    @property
    def open(self) -> bool:
        return self.admin is None and self.read is None

    def level_of(self, presented: str) -> str | None:
        """ADMIN, READ or None. Both comparisons always run, in constant time."""
        given = presented.encode()
        is_admin = self.admin is not None and hmac.compare_digest(given, self.admin.encode())
        is_read = self.read is not None and hmac.compare_digest(given, self.read.encode())
        return ADMIN if is_admin else READ if is_read else None

    # -- the dashboard's session cookie: "level.expires.signature", signed with that level's own token, so
    # -- every process with the same tokens accepts it and changing a token ends its sessions.
    def _signature(self, level: str, expires: int, purpose: str = "session") -> str:
        token = self.admin if level == ADMIN else self.read
        assert token is not None
        return hmac.new(token.encode(), f"{purpose}.{level}.{expires}".encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, level: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        return f"{level}.{expires}.{self._signature(level, expires)}"

    def session_level(self, cookie: str, now: float | None = None) -> str | None:
        level, _, rest = cookie.partition(".")
        expires, _, signature = rest.partition(".")
        if level not in (ADMIN, READ) or not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        if (self.admin if level == ADMIN else self.read) is None:
            return None
        return level if hmac.compare_digest(signature, self._signature(level, int(expires))) else None

    def form_key(self, cookie: str) -> str:
        """The key the dashboard's admin forms carry (bound to the session: a cross-site form cannot know it)."""
        level, _, rest = cookie.partition(".")
        expires = rest.partition(".")[0]
        return self._signature(level, int(expires), "form") if expires.isdigit() else ""


@dataclass(frozen=True)
class Viewer:
    """The caller's level; ``shape`` makes JSON of a report result, pseudonymising ids below admin."""

    level: str
    pseudonyms: Callable[[str, int], str]
    via_cookie: bool = False

    @property
    def admin(self) -> bool:
        return self.level == ADMIN

    def shape(self, value: Any) -> Any:
        return json_ready(value, pseudonym=None if self.admin else self.pseudonyms)


class Gate:
    """Resolves a request to a :class:`Viewer` (FastAPI dependencies :meth:`reader` and :meth:`admin`)."""

    def __init__(self, tokens: Tokens):
        self.tokens = tokens
        self.pseudonyms = Pseudonyms()  # stable while the app runs, unlinkable across restarts

    def level(self, request: Request) -> tuple[str | None, bool]:
        """(level or None, whether it came from the session cookie)."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return None, False
            return self.tokens.level_of(value.strip()), False
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and request.method in SAFE_METHODS:
            level = self.tokens.session_level(cookie)
            if level is not None:
                return level, True
        return (READ if self.tokens.open else None), False

    def viewer(self, request: Request) -> Viewer | None:
        level, via_cookie = self.level(request)
        return None if level is None else Viewer(level, self.pseudonyms, via_cookie)

    def reader(self, request: Request) -> Viewer:
        viewer = self.viewer(request)
        if viewer is None:
            raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
        return viewer

    def admin(self, request: Request) -> Viewer:
        viewer = self.viewer(request)
        if viewer is None or not viewer.admin:
            raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
        return viewer
