"""How often the answer judge (``rag.semantic.judge``) is right, both ways (issue #22).

The judge is what shadow mode and audits rest on: it says whether a cached answer would have
been right for a new question by comparing it with that question's own answer. Its one number,
``RAG_SEMANTIC_JUDGE_MIN_COSINE`` = 0.75, was read off the hand-written set's ``reworded``,
``number`` and ``negation`` pairs (rewordings reach cosine 0.70-0.89; those traps are caught by
the fact checks whatever the cosine); its other categories and the second set were not looked at
to choose it. It is measured, at that value and at the values of ``SWEEP``, on two sets:

1. ``tests/data/answer_pairs.jsonl``: answer pairs written by hand (same meaning reworded or
   with more detail; different numbers, negation, yes/no, entities, content), built on the
   same sources;
2. answers the local model (SmolLM2-135M, the service's own prompt and sampling) gives to both
   sides of question pairs of the held-out families (``tests/data/semantic_eval.jsonl``,
   ``--per-family`` pairs each), each retrieved from the sample corpus as the service would.
   The label is the question pair's: would serving one's answer for the other be right.

For the second set it also reports *evidence agreement* (issue #22, item 7): whether the two
questions' top-4 chunks share at least one chunk, per label.

Usage: python scripts/eval_judge.py [--per-family 12] [--show]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from collections import Counter, defaultdict
from contextlib import AsyncExitStack
from pathlib import Path

from rag.corpus import open_corpus, sample_corpus
from rag.ingest import collect_documents
from rag.prompt import build_messages
from rag.semantic.judge import AnswerJudge, difference
from rag.semantic.verifier import Pair
from rag.settings import Settings
from rag.types import ScoredChunk
from rag.wiring import open_generator

ROOT = Path(__file__).resolve().parents[1]


SWEEP = (0.7, 0.75, 0.8, 0.85, 0.9)


def confusion(rows: list[tuple[int, bool]]) -> str:
    """``rows``: (label, judged same)."""
    tp = sum(1 for y, same in rows if y == 1 and same)
    fn = sum(1 for y, same in rows if y == 1 and not same)
    fp = sum(1 for y, same in rows if y == 0 and same)
    tn = sum(1 for y, same in rows if y == 0 and not same)
    pos, neg = tp + fn, fp + tn
    return (
        f"same & should hit {tp}, different & should hit {fn}, same & trap {fp}, "
        f"different & trap {tn}; false 'same' on traps {fp}/{neg} ({fp / max(neg, 1):.1%}), "
        f"false 'different' on should-hit {fn}/{pos} ({fn / max(pos, 1):.1%})"
    )


async def generate(
    questions: list[str], retrieved: list[list[ScoredChunk]], settings: Settings
) -> list[str]:
    """The local model's answer to each question from its chunks, through the service's own
    generator (its prompt, sampling and llama.cpp options)."""
    answers = []
    async with AsyncExitStack() as stack:
        generator = open_generator(stack, settings, None)
        for i, (question, sources) in enumerate(zip(questions, retrieved, strict=True)):
            answers.append((await generator.complete(build_messages(question, sources))).text)
            print(f"\r  answered {i + 1}/{len(questions)}", end="", flush=True)
    print()
    return answers


async def main(args: argparse.Namespace) -> None:
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="eval-judge-") as tmp:
        corpus_settings = Settings(
            data_dir=Path(tmp), seed_sample_corpus=False, seed_project_docs=True
        )
        async with open_corpus(corpus_settings) as corpus:
            await corpus.ingestor.add(collect_documents(sample_corpus(corpus_settings)))
            embedder = corpus.embedder

            # 1. hand-written answer pairs
            lines = [
                json.loads(x)
                for x in (ROOT / "tests/data/answer_pairs.jsonl").read_text().split("\n")
                if x
            ]
            vectors = await embedder.embed([x[s] for x in lines for s in ("a", "b")])
            hand = [
                (x, Pair(x["a"], vectors[2 * i], x["b"], vectors[2 * i + 1]), {"d"}, {"d"})
                for i, x in enumerate(lines)
            ]
            report("hand-written answer pairs", hand, settings, args.show)

            # 2. the local model's answers to held-out question pairs
            pairs = [json.loads(x) for x in (ROOT / "tests/data/semantic_eval.jsonl").open()]
            families: dict[str, list[dict[str, object]]] = defaultdict(list)
            for x in pairs:
                families[str(x["category"])].append(x)
            rng = random.Random(args.seed)
            sample = [
                x
                for family in sorted(families)
                for x in rng.sample(families[family], args.per_family)
            ]
            questions = [str(x[s]) for x in sample for s in ("a", "b")]
            query_vectors = await embedder.embed(questions)
            retrieved = [await corpus.retriever.search(v, 4) for v in query_vectors]
            if args.reuse and args.answers_out.exists():  # judge the answers an earlier run kept
                kept = {
                    (line["a"], line["b"]): line
                    for line in map(json.loads, args.answers_out.read_text("utf-8").splitlines())
                }
                answers = [str(kept[(x["a"], x["b"])][f"answer_{s}"]) for x in sample for s in "ab"]  # type: ignore[index]
            else:
                answers = await generate(questions, retrieved, settings)
            answer_vectors = await embedder.embed(answers)

    generated, evidence = [], []
    with args.answers_out.open("w", encoding="utf-8") as out:
        for i, x in enumerate(sample):
            a, b = 2 * i, 2 * i + 1
            pair = Pair(answers[a], answer_vectors[a], answers[b], answer_vectors[b])
            docs_a = {s.chunk.doc_id for s in retrieved[a]}
            docs_b = {s.chunk.doc_id for s in retrieved[b]}
            generated.append((x, pair, docs_a, docs_b))
            chunks_a = {s.chunk.chunk_id for s in retrieved[a]}
            chunks_b = {s.chunk.chunk_id for s in retrieved[b]}
            evidence.append((int(x["label"]), bool(chunks_a & chunks_b)))  # type: ignore[call-overload]
            line = {**x, "answer_a": answers[a], "answer_b": answers[b]}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
    report("local-model answers to held-out question pairs", generated, settings, args.show)
    shared = Counter((y, agree) for y, agree in evidence)
    print(
        "evidence agreement (top-4 chunks share one): "
        f"should-hit {shared[(1, True)]}/{shared[(1, True)] + shared[(1, False)]}, "
        f"traps {shared[(0, True)]}/{shared[(0, True)] + shared[(0, False)]}"
    )


Judged = tuple[dict[str, object], Pair, set[str], set[str]]


def report(name: str, judged: list[Judged], settings: Settings, show: bool) -> None:
    """The confusion matrix at each ``min_cosine`` of ``SWEEP`` (the setting's marked), and per
    category at the setting's."""
    print(f"{name} ({len(judged)}):")
    for min_cosine in sorted({*SWEEP, settings.semantic_judge_min_cosine}):
        judge = AnswerJudge(min_cosine)
        rows = [(int(x["label"]), judge.same(p, da, db)) for x, p, da, db in judged]  # type: ignore[call-overload]
        mark = (
            " <- RAG_SEMANTIC_JUDGE_MIN_COSINE"
            if min_cosine == settings.semantic_judge_min_cosine
            else ""
        )
        print(f"  min cosine {min_cosine:.2f}: {confusion(rows)}{mark}")
    judge = AnswerJudge(settings.semantic_judge_min_cosine)
    by_category: dict[str, list[bool]] = defaultdict(list)
    for x, pair, docs_a, docs_b in judged:
        same = judge.same(pair, docs_a, docs_b)
        by_category[f"{x['category']} (label {x['label']})"].append(same)
        if show:
            print(
                f"    {x['category']}: same {same} cos {pair.similarity:.2f} "
                f"{difference(pair.a, pair.b)}\n      A: {pair.a!r}\n      B: {pair.b!r}"
            )
    for category, found in sorted(by_category.items()):
        print(f"    {category:<36} judged same {sum(found)}/{len(found)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", action="store_true", help="print every pair")
    parser.add_argument(
        "--reuse", action="store_true", help="judge the answers --answers-out kept, no LLM"
    )
    parser.add_argument(
        "--answers-out",
        type=Path,
        default=ROOT / "docs/benchmark/judge-answers.jsonl",
        help="where the generated answers are kept",
    )
    asyncio.run(main(parser.parse_args()))
