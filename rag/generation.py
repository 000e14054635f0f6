"""LLM generation through the official ``openai`` client, against any OpenAI-compatible server
(OpenAI, vLLM, Ollama, llama.cpp). Provider errors become ``LLMError`` subclasses here, where
they cross into the library."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from rag.aio import finish_even_if_cancelled
from rag.errors import LLMError, LLMRateLimitError, LLMTimeoutError
from rag.types import Completion, Usage


@contextmanager
def _provider_errors() -> Iterator[None]:
    try:
        yield
    except openai.APITimeoutError as exc:
        raise LLMTimeoutError("the LLM did not answer in time") from exc
    except openai.RateLimitError as exc:
        raise LLMRateLimitError("the LLM provider is rate-limiting requests") from exc
    except openai.APIStatusError as exc:
        raise LLMError(f"the LLM returned HTTP {exc.status_code}: {exc.message}") from exc
    except openai.APIError as exc:
        raise LLMError(f"the LLM call failed: {exc}") from exc
    except Exception as exc:
        # Transport errors while a stream is read come through unwrapped, as exceptions of
        # whichever HTTP library the client uses; to the caller they all mean the same.
        raise LLMError(f"the LLM connection failed: {exc!r}") from exc


class OpenAIGenerator:
    """``Generator`` over ``openai.AsyncOpenAI`` (passed in)."""

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI,
        model_id: str,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self.model_id = model_id
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stop = list(stop) or None
        self._extra_body = extra_body

    @property
    def sampling(self) -> dict[str, float | int | str]:
        """Everything besides the prompt that changes the answer; part of the answer key: the
        token limit, temperature, stop sequences and what ``extra_body`` sends (llama.cpp's
        repetition control)."""
        sampling: dict[str, float | int | str] = {
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
        }
        if self._stop:
            sampling["stop"] = json.dumps(self._stop)
        for name, value in (self._extra_body or {}).items():
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                sampling[name] = value
        return sampling

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the LLM server answers: one ``GET {base_url}/models``, no retries. A server
        that answers with an error of its own (404: no such route, 429) is up; one that refuses
        our key (401, 403), fails (5xx) or does not answer in ``timeout_s`` is down."""
        try:
            await self._client.with_options(timeout=timeout_s, max_retries=0).models.list()
        except openai.APIStatusError as exc:
            return exc.status_code < 500 and exc.status_code not in (401, 403)
        except Exception:  # transport errors of whichever HTTP library, timeouts: unreachable
            return False
        return True

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        with _provider_errors():
            response = await self._client.chat.completions.create(
                model=self.model_id,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                stop=self._stop,
                extra_body=self._extra_body,
            )
        if not isinstance(response, ChatCompletion):  # e.g. an event stream nobody asked for
            raise LLMError(f"the LLM returned an unexpected response ({type(response).__name__})")
        if not response.choices:
            raise LLMError("the LLM returned no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        return Completion(
            text=text,
            pieces=(text,),
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            finish_reason=choice.finish_reason or "",
            model=self.model_id,
        )

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str | Completion]:
        pieces: list[str] = []
        finish_reason = ""
        usage = Usage()
        with _provider_errors():
            stream = await self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model_id,
                messages=messages,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                stop=self._stop,
                stream=True,
                stream_options={"include_usage": True},
                extra_body=self._extra_body,
            )
            try:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = Usage(
                            prompt_tokens=chunk.usage.prompt_tokens,
                            completion_tokens=chunk.usage.completion_tokens,
                        )
                    for choice in chunk.choices:
                        if choice.delta.content:
                            pieces.append(choice.delta.content)
                            yield choice.delta.content
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
            finally:
                # also on client disconnect: stop paying for tokens
                await finish_even_if_cancelled(stream.close())
        if not finish_reason:
            raise LLMError("the LLM stream ended before the model finished")
        yield Completion(
            text="".join(pieces),
            pieces=tuple(pieces),
            usage=usage,
            finish_reason=finish_reason,
            model=self.model_id,
        )
