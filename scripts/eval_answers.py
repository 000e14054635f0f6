"""How well the local model answers (issue #24): decoding settings side by side on one run.

The sample corpus a first start ingests (``rag/sample_corpus``, this README and docs/) is
embedded with MiniLM into the embedded vector store; each question's top 4 chunks are retrieved
once, and every configuration answers every question from the same chunks, through the local
llama.cpp server (SmolLM2-135M-Instruct), greedy decoding. A configuration with ``sentences``
gets its context from the service's own ``rag.prompt.PromptBuilder`` (the time that takes is
printed). Per configuration:

- **looping**: an answer with a 5-word sequence three times or more, or a sentence repeated;
- **empty**: fewer than three content words ("The answer is:" is empty);
- **grounded**: at least 75 % of the answer's content words (4+ letters, not a stop word) occur
  in its chunks (an empty answer is not);
- mean completion tokens and seconds per answer.

Goal (issue #24): 0 looping, 0 empty, >= 75 % grounded.

The default (``DEFAULT``) was chosen on QUESTIONS; ``--held-out`` asks 12 questions on other
topics, with "before" and the default unless ``--configs`` says otherwise, to judge the choice
on questions it was not made on.

Usage: python scripts/eval_answers.py [--questions N] [--show] [--held-out] [--configs 4,14]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import openai

from rag.corpus import open_corpus, sample_corpus
from rag.ingest import collect_documents
from rag.local import local_llm_server
from rag.prompt import USER_TEMPLATE, PromptBuilder, build_messages, plain_text, render
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
# Asked only after the default was chosen on QUESTIONS (--held-out): topics none of those touch.
HELD_OUT = [
    "How long does a conversation session live?",
    "What does RAG_API_KEYS configure?",
    "Which Redis maxmemory policy should I use?",
    "What does rag cache stats print?",
    "What does the web page show?",
    "How does the service count tokens?",
    "What does the Grafana dashboard show?",
    "What happens when the LLM times out?",
    "How is a follow-up question in a session answered?",
    "What does RAG_ENVIRONMENT=production refuse?",
    "How do I use OpenAI instead of the local model?",
    "What does /healthz report?",
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
    stop: list[str] = field(default_factory=list)
    penalties: dict[str, float] = field(default_factory=dict)  # OpenAI's frequency/presence
    llama: dict[str, float] = field(default_factory=dict)  # llama.cpp's own, in extra_body
    system: str | None = None  # instead of the prompt's
    plain: bool = False  # passages through rag.prompt.plain_text
    passages: int = 4  # the first this many of the retrieved chunks go into the prompt
    nearest_last: bool = False  # the passages in reverse order: the best one next to the question
    numbered: bool = True  # "[1] …" before each passage (the model copies the markers)
    sentences: int = 0  # > 0: only the passages' sentences nearest the question, this many
    example: bool = False  # one worked example (EXAMPLE) before the question


SHORT = (
    "Answer the question in one or two short sentences, using the words of the numbered "
    "context passages. If they do not contain the answer, say so."
)
DRY = {"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2}  # llama.cpp's
PROMPT_V1 = (  # rag/prompt.py before issue #24
    "You answer questions using only the numbered context passages. "
    "Answer in two or three sentences. If the context does not contain the answer, say so."
)
# A worked example on another subject, shown as an earlier turn: the form of an answer (one
# sentence in the passage's words, no markers), not its content.
EXAMPLE = [
    {
        "role": "user",
        "content": USER_TEMPLATE.format(
            context="[1] The thumbnail service resizes uploaded images and keeps each resized "
            "image for 30 days.\n\n[2] Uploads larger than 20 MB are refused with an error "
            "that names the limit.",
            question="What happens to uploads larger than 20 MB?",
        ),
    },
    {"role": "assistant", "content": "Uploads larger than 20 MB are refused with an error."},
]
DEFAULT = 14  # the service's decoding and context (rag/prompt.py, rag/config/settings.toml)
CONFIGS = [
    Config("before: 160 tokens, no stop, no penalty", 160, system=PROMPT_V1),
    Config("64 tokens, stop at a line break", 64, ["\n"], system=PROMPT_V1),
    Config("64 tokens, stop at a line break, DRY 0.8", 64, ["\n"], llama=DRY, system=PROMPT_V1),
    Config("96 tokens, stop at a blank line, DRY 0.8", 96, ["\n\n"], llama=DRY, system=PROMPT_V1),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8, short prompt",
        96,
        ["\n\n"],
        llama=DRY,
        system=SHORT,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 1.5, short prompt",
        96,
        ["\n\n"],
        llama={**DRY, "dry_multiplier": 1.5},
        system=SHORT,
    ),
    Config(
        "96 tokens, stop at 2 blank lines or '\\n[', DRY 1.5, short prompt",
        96,
        ["\n\n\n", "\n["],
        llama={**DRY, "dry_multiplier": 1.5},
        system=SHORT,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 1.5, short prompt, plain passages",
        96,
        ["\n\n"],
        llama={**DRY, "dry_multiplier": 1.5},
        system=SHORT,
        plain=True,
    ),
    Config(
        "96 tokens, stop at 2 blank lines or '\\n[', DRY 1.5, short prompt, plain passages",
        96,
        ["\n\n\n", "\n["],
        llama={**DRY, "dry_multiplier": 1.5},
        system=SHORT,
        plain=True,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 1.5, short prompt, nearest passage last",
        96,
        ["\n\n"],
        llama={**DRY, "dry_multiplier": 1.5},
        system=SHORT,
        nearest_last=True,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 1.5, short prompt, 2 passages",
        96,
        ["\n\n"],
        llama={**DRY, "dry_multiplier": 1.5},
        system=SHORT,
        passages=2,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8, short prompt, passages not numbered",
        96,
        ["\n\n"],
        llama=DRY,
        system=SHORT,
        numbered=False,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8 + repeat penalty 1.1, short prompt",
        96,
        ["\n\n"],
        llama={**DRY, "repeat_penalty": 1.1},
        system=SHORT,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8, short prompt, 3 nearest sentences",
        96,
        ["\n\n"],
        llama=DRY,
        system=SHORT,
        sentences=3,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8, short prompt, 5 nearest sentences",
        96,
        ["\n\n"],
        llama=DRY,
        system=SHORT,
        sentences=5,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8, short prompt, 5 nearest sentences, example",
        96,
        ["\n\n"],
        llama=DRY,
        system=SHORT,
        sentences=5,
        example=True,
    ),
    Config(
        "96 tokens, stop at a blank line, DRY 0.8, short prompt, example",
        96,
        ["\n\n"],
        llama=DRY,
        system=SHORT,
        example=True,
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


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if len(w) >= 4 and w not in STOP_WORDS]


def grounded(text: str, sources: list[ScoredChunk]) -> bool:
    content = content_words(text)
    if not content:
        return False
    seen = set(words(" ".join(s.chunk.text for s in sources)))
    return sum(w in seen for w in content) / len(content) >= 0.75


@dataclass
class Retrieved:
    sources: list[ScoredChunk]
    contexts: dict[int, list[tuple[int, str]]]  # per sentence count: the service's context


async def retrieve(settings: Settings, questions: list[str], counts: set[int]) -> list[Retrieved]:
    async with open_corpus(settings) as corpus:
        report = await corpus.ingestor.add(collect_documents(sample_corpus(settings)))
        print(f"sample corpus: {report.documents} documents, {report.chunks} chunks")
        vectors = await corpus.embedder.embed(questions)
        builders = {n: PromptBuilder(corpus.embedder, n) for n in counts}
        found, timings = [], []
        for question, vector in zip(questions, vectors, strict=True):
            sources = await corpus.retriever.search(vector, 4)
            contexts = {}
            for n, builder in builders.items():
                started = time.perf_counter()
                contexts[n] = await builder.context(question, sources, vector)
                if n == settings.context_sentences:
                    timings.append(time.perf_counter() - started)
            found.append(Retrieved(sources, contexts))
        if timings:  # the server's embedder: one torch thread
            print(
                f"choosing the context's sentences: p50 {1000 * statistics.median(timings):.0f} "
                f"ms, max {1000 * max(timings):.0f} ms per question"
            )
        return found


async def answer(
    client: openai.AsyncOpenAI, config: Config, question: str, found: Retrieved
) -> tuple[str, int, float]:
    sources = found.sources
    if config.plain:
        sources = [
            replace(s, chunk=replace(s.chunk, text=plain_text(s.chunk.text))) for s in sources
        ]
    sources = sources[: config.passages]
    if config.nearest_last:
        sources = sources[::-1]
    messages = build_messages(question, sources)
    if config.sentences:  # the service's context (rag.prompt.PromptBuilder)
        messages = render(question, found.contexts[config.sentences])
    if not config.numbered:
        context = "\n\n".join(s.chunk.text for s in sources)
        messages[1] = {
            "role": "user",
            "content": USER_TEMPLATE.format(context=context, question=question),
        }
    if config.system is not None:
        messages[0] = {"role": "system", "content": config.system}
    if config.example:
        messages[1:1] = EXAMPLE
    started = time.perf_counter()
    response = await client.chat.completions.create(
        model="local",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=config.max_tokens,
        temperature=0.0,
        stop=config.stop or None,
        extra_body={"cache_prompt": False, **config.llama},
        **config.penalties,  # type: ignore[arg-type]
    )
    seconds = time.perf_counter() - started
    tokens = response.usage.completion_tokens if response.usage else 0
    return response.choices[0].message.content or "", tokens, seconds


async def run(args: argparse.Namespace) -> None:
    questions = (HELD_OUT if args.held_out else QUESTIONS)[: args.questions]
    if args.configs:
        configs = [CONFIGS[int(i)] for i in args.configs.split(",")]
    else:
        configs = [CONFIGS[0], CONFIGS[DEFAULT]] if args.held_out else CONFIGS
    with tempfile.TemporaryDirectory(prefix="eval-answers-") as tmp:
        settings = Settings(data_dir=Path(tmp), seed_sample_corpus=False, seed_project_docs=True)
        retrieved = await retrieve(settings, questions, {c.sentences for c in configs})
    with local_llm_server(threads=2) as base_url:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed")
        for config in configs:
            results = [
                await answer(client, config, q, r)
                for q, r in zip(questions, retrieved, strict=True)
            ]
            texts = [r[0] for r in results]
            looping = sum(loops(t) for t in texts)
            empty = sum(len(content_words(t)) < 3 for t in texts)
            ok = sum(grounded(t, r.sources) for t, r in zip(texts, retrieved, strict=True))
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
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="the questions not used to choose the default; only 'before' and the default",
    )
    parser.add_argument(
        "--configs", default="", help="comma-separated indexes into CONFIGS (default: all)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
