"""For your own tests and demos: a local OpenAI-compatible server a real ``dspy.LM`` talks to over HTTP.

    from dspy_tokens.testing import FakeLLMServer, Reply
    with FakeLLMServer() as server:
        lm = server.lm("openai/gpt-4o-mini")            # dspy.LM(..., api_base=server.url)
        server.enqueue(Reply(status=429), Reply(cached_tokens=3))
"""

from .replies import count_tokens, default_content, dspy_reply
from .server import FakeLLMServer, Reply, RequestLog

__all__ = ["FakeLLMServer", "Reply", "RequestLog", "count_tokens", "default_content", "dspy_reply"]
