"""Posts budget alerts to Discord/Slack-compatible webhooks from one background thread: the caller never waits
for the network, a failure is retried with backoff, and nothing is ever raised into the caller."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request

log = logging.getLogger("dspy_tokens")

ATTEMPTS = 5


def payload(text: str) -> bytes:
    # "content" is Discord's field, "text" Slack's; allowed_mentions parse=[] makes Discord ping nobody, even if a
    # rule's name contains @everyone or a user mention.
    return json.dumps({"content": text, "text": text, "allowed_mentions": {"parse": []}}).encode()


class WebhookSender:
    def __init__(self, attempts: int = ATTEMPTS, backoff: float = 0.5, timeout: float = 10.0):
        self.attempts, self.backoff, self.timeout = attempts, backoff, timeout
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post(self, url: str, text: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dspy-tokens-alerts", daemon=True)
                self._thread.start()
        self._queue.put((url, text))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._send(*item)
            finally:
                self._queue.task_done()

    def _send(self, url: str, text: str) -> None:
        for attempt in range(self.attempts):
            try:
                request = urllib.request.Request(url, data=payload(text), method="POST",
                                                 headers={"Content-Type": "application/json",
                                                          "User-Agent": "dspy-tokens"})
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if response.status < 300:
                        return
            except Exception as exc:  # HTTPError (4xx/5xx), refused connections, timeouts: all retried
                error = exc
            else:
                error = RuntimeError(f"HTTP {response.status}")
            if attempt < self.attempts - 1:
                time.sleep(self.backoff * 2 ** attempt)
        log.error("dspy-tokens: a budget alert could not be posted to its webhook after %d attempts (%s)",
                  self.attempts, error)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued alert was posted (or gave up); ``True`` if the queue emptied in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.drain(timeout)
            self._queue.put(None)
            self._thread.join(timeout)
