"""Pseudonyms for ids: what anonymised exports and the web API's read-only views show instead of a user, guild
or channel id."""

from __future__ import annotations

import hashlib
import hmac
import secrets

CACHE_LIMIT = 100_000


class Pseudonyms:
    """``pseudonyms("user_id", 42)`` is a salted HMAC-SHA256 of ``"user_id:42"``, 16 hex digits. Equal ids get
    equal pseudonyms under one salt; without the salt they cannot be linked back or across salts. The default
    salt is random, so two ``Pseudonyms()`` never agree."""

    def __init__(self, salt: bytes | None = None):
        self.salt = salt if salt is not None else secrets.token_bytes(32)
        self._cache: dict[tuple[str, int], str] = {}

    def __call__(self, column: str, value: int) -> str:
        key = (column, value)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()  # bounded memory; the pseudonym itself does not depend on the cache
            message = f"{column}:{value}".encode()
            found = self._cache[key] = hmac.new(self.salt, message, hashlib.sha256).hexdigest()[:16]
        return found
