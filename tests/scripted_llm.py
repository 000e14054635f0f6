"""A scripted OpenAI-compatible chat endpoint (an httpx2 transport, like the openai client's):
deterministic answers and failures for tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx2

WORDS = ["Caches", " keep", " answers", " for", " one", " hour", "."]


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


@dataclass
class ScriptedLLM:
    """Behaves by the question: 'slow' streams 42 words ``slow_s`` (0.1 s) apart, 'break' drops
    the connection after three words (twenty when slow), 'fail' answers HTTP 500, 'throttle' 429,
    anything else streams WORDS (or returns them as one completion when not asked to stream)."""

    calls: int = 0
    words_sent: list[int] = field(default_factory=list)
    slow_s: float = 0.1  # between the words of a 'slow' answer

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.endswith("/models"):  # a health check
            model = {"id": "scripted", "object": "model", "created": 0, "owned_by": "tests"}
            return httpx2.Response(200, json={"object": "list", "data": [model]})
        self.calls += 1
        body = json.loads(request.content)
        prompt = body["messages"][-1]["content"]
        question = prompt.rsplit("Question:", 1)[-1]  # not the context: it may say "fail" too
        if "fail" in question:
            return httpx2.Response(500, json={"error": {"message": "scripted failure"}})
        if "throttle" in question:
            return httpx2.Response(
                429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0"}
            )
        if not body.get("stream"):  # a whole completion (e.g. a follow-up's rewrite)
            return httpx2.Response(200, json=self._completion("".join(WORDS)))
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=self._stream(question)
        )

    @staticmethod
    def _completion(text: str) -> dict[str, object]:
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        }

    async def _stream(self, question: str) -> AsyncIterator[bytes]:
        words = WORDS * 6 if "slow" in question else WORDS
        self.words_sent.append(0)
        for i, word in enumerate(words):
            if "break" in question and i == (20 if "slow" in question else 3):
                raise httpx2.ReadError("connection reset by scripted peer")
            if "slow" in question:
                await asyncio.sleep(self.slow_s)
            self.words_sent[-1] += 1
            yield _chunk({"content": word})
        yield _chunk({}, finish="stop")
        usage = {
            "prompt_tokens": 20,
            "completion_tokens": len(words),
            "total_tokens": 20 + len(words),
        }
        last = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "scripted"}
        yield f"data: {json.dumps({**last, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))
