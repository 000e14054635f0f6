"""The semantic evaluation set and the training-pair generator: the set is big enough, every
line has a category, and none of its families or pairs come from the generator."""

from __future__ import annotations

import json
from collections import Counter

from tests.paths import DATA, load_script

families = load_script("pair_families")  # the training-pair generator (scripts/make_pairs.py)
FAMILIES, generate = families.FAMILIES, families.generate

EVAL_SET = DATA / "semantic_eval.jsonl"
HELD_OUT = {
    "paraphrase-reword",
    "prefix-antonym",
    "comparison-flip",
    "complementary-qualifier",
    "role-swap",
}


def rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in EVAL_SET.read_text().splitlines()]


def test_eval_set_is_big_labelled_and_categorised() -> None:
    lines = rows()
    assert len(lines) >= 1000
    assert all({"a", "b", "label", "category"} <= line.keys() for line in lines)
    counts = Counter(str(line["category"]) for line in lines)
    assert set(counts) == HELD_OUT
    positives = sum(line["label"] == 1 for line in lines)
    assert 400 <= positives <= len(lines) - 400  # both sides weigh


def test_generator_families_are_disjoint_from_the_eval_set() -> None:
    assert not HELD_OUT & set(FAMILIES)
    generated = {frozenset((p["a"], p["b"])) for p in generate(8000, seed=0)}
    assert not any(frozenset((line["a"], line["b"])) in generated for line in rows())


def test_generator_is_deterministic_and_labelled_by_family() -> None:
    first = list(generate(500, seed=3))
    assert first == list(generate(500, seed=3))
    assert {p["category"] for p in first} == set(FAMILIES)
    for pair in first:
        assert pair["a"] != pair["b"]
        positive = str(pair["category"]).startswith(("paraphrase", "near-repeat"))
        assert pair["label"] == int(positive)
