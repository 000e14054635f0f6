"""How well the local model answers (issue #24): decoding settings side by side on one run.

The sample corpus a first start ingests (``rag/sample_corpus``, this README and docs/) is
embedded with MiniLM into Qdrant local mode; each question's top 4 chunks are retrieved once,
and every configuration answers every question from the same chunks, through the local
llama.cpp server (SmolLM2-135M-Instruct), greedy decoding. Per configuration:

- **looping**: an answer with a 5-word sequence three times or more, or a sentence repeated;
- **empty**: no words;
- **grounded**: at least 75 % of the answer's content words (4+ letters, not a stop word) occur
  in its chunks;
- mean completion tokens and seconds per answer.

Goal (issue #24): 0 looping, 0 empty, >= 75 % grounded.

Usage: python scripts/eval_answers.py [--questions N]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from rag.corpus import open_corpus, sample_corpus
from rag.ingest import collect_documents
from rag.local import local_llm_server
from rag.prompt import build_messages
from rag.settings import Settings
from rag.types import ScoredChunk

QUESTIONS = [
    "How long are LLM answers cached?",
    "What happens when a client disconnects?",
    "How long are embeddings cached?",
    "What is the corpus version?",
    "Where does the corpus version live?",
    "What does the near cache do?",
    "How does the service avoid cache stampedes?",
    "What is single-flight?",
    "When is an answer not cached?",
    "What does stale-while-revalidate mean here?",
    "How are cached answers invalidated when a document changes?",
    "What does POST /cache/invalidate do?",
    "What happens when Redis is down?",
    "What is the semantic cache?",
    "How does the semantic cache avoid wrong answers?",
    "What does the benchmark measure?",
    "How is load shed when the LLM is saturated?",
    "What does a tenant API key do?",
    "How are streamed answers cached?",
    "What does GET /stats show?",
    "What model does the service use by default?",
    "How do I ingest my own documents?",
    "What happens to a document change after a crash?",
    "What is the circuit breaker for?",
]
STOP_WORDS = set(
    "this that with from they them their there then than what when where which while will "
    "would could should have been were your about into only also more most some such each "
    "other these those does done just very many much over under after before because".split()
)


@dataclass(frozen=True)
class Config:
    name: str
    max_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)  # extra_body / penalties


CONFIGS = [
    Config("before: 160 tokens, no penalty", 160),
    Config("160 tokens, repeat_penalty 1.3", 160, {"repeat_penalty": 1.3}),
    Config(
        "96 tokens, repeat_penalty 1.3, frequency 0.5",
        96,
        {"repeat_penalty": 1.3, "frequency_penalty": 0.5},
    ),
    Config(
        "96 tokens, repeat 1.5, frequency 0.8, presence 0.5",
        96,
        {"repeat_penalty": 1.5, "frequency_penalty": 0.8, "presence_penalty": 0.5},
    ),
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def loops(text: str) -> bool:
    tokens = words(text)
    grams = Counter(tuple(tokens[i : i + 5]) for i in range(len(tokens) - 4))
    if grams and max(grams.values()) >= 3:
        return True
    sentences = [s.strip().lower() for s in re.split(r"[.!?]\s+", text) if len(s.split()) >= 3]
    return len(sentences) != len(set(sentences))


def grounded(text: str, sources: list[ScoredChunk]) -> bool:
    content = [w for w in words(text) if len(w) >= 4 and w not in STOP_WORDS]
    if not content:
        return False
    seen = set(words(" ".join(s.chunk.text for s in sources)))
    return sum(w in seen for w in content) / len(content) >= 0.75


async def retrieve(settings: Settings, questions: list[str]) -> list[list[ScoredChunk]]:
    async with open_corpus(settings) as corpus:
        report = await corpus.ingestor.add(collect_documents(sample_corpus(settings)))
        print(f"sample corpus: {report.documents} documents, {report.chunks} chunks")
        vectors = await corpus.embedder.embed(questions)
        return [await corpus.retriever.search(v, 4) for v in vectors]


async def answer(
    client: openai.AsyncOpenAI, config: Config, question: str, sources: list[ScoredChunk]
) -> tuple[str, int, float]:
    penalties = {k: v for k, v in config.extra.items() if k.endswith("y_penalty")}
    body = {"cache_prompt": False, **{k: v for k, v in config.extra.items() if k not in penalties}}
    started = time.perf_counter()
    response = await client.chat.completions.create(
        model="local",
        messages=build_messages(question, sources),  # type: ignore[arg-type]
        max_tokens=config.max_tokens,
        temperature=0.0,
        extra_body=body,
        **penalties,
    )
    seconds = time.perf_counter() - started
    tokens = response.usage.completion_tokens if response.usage else 0
    return response.choices[0].message.content or "", tokens, seconds


async def run(args: argparse.Namespace) -> None:
    questions = QUESTIONS[: args.questions]
    with tempfile.TemporaryDirectory(prefix="eval-answers-") as tmp:
        settings = Settings(data_dir=Path(tmp), seed_sample_corpus=False, seed_project_docs=True)
        retrieved = await retrieve(settings, questions)
    with local_llm_server(threads=2) as base_url:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed")
        for config in CONFIGS:
            results = [
                await answer(client, config, q, s)
                for q, s in zip(questions, retrieved, strict=True)
            ]
            texts = [r[0] for r in results]
            looping = sum(loops(t) for t in texts)
            empty = sum(not words(t) for t in texts)
            ok = sum(grounded(t, s) for t, s in zip(texts, retrieved, strict=True))
            print(
                f"{config.name:<52} looping {looping:>2}, empty {empty}, grounded "
                f"{ok}/{len(texts)} ({ok / len(texts):.0%}); "
                f"{statistics.mean(r[1] for r in results):.0f} tokens, "
                f"{statistics.mean(r[2] for r in results):.2f} s per answer",
                flush=True,
            )
            if args.show:
                for q, t in zip(questions, texts, strict=True):
                    print(f"    Q: {q}\n    A: {t.strip()!r}")
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--show", action="store_true", help="print every answer")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
