"""Generated training pairs for the semantic verifier, by *family*: each family is one way two
questions can look alike and mean the same (paraphrases) or differ (traps). Used by
``scripts/make_pairs.py`` and by ``tests/unit/test_semantic_eval_set.py``; not part of the
shipped package.

These are the families the verifier is trained on. Other families (prefix antonyms, comparison
flips, complementary qualifiers, role swaps, rewordings of unseen intents) are held out of this
module on purpose: they live only in ``scripts/make_eval_set.py``, written by hand, so the
evaluation says how the verifier does on a kind of trap it never saw.

Every pair is ``{"a", "b", "label", "category"}``; the order of ``a`` and ``b`` is random.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Pair = dict[str, Any]

# -- lexicons --------------------------------------------------------------------------------
# Objects, verbs, frames and templates the families fill in; the data lives in pair_lexicons.json
# beside this module (one list per name below).
_LEXICONS = json.loads((Path(__file__).parent / "pair_lexicons.json").read_text("utf-8"))
OBJECTS = _LEXICONS["OBJECTS"]
ACTION_FLIPS = _LEXICONS["ACTION_FLIPS"]
VERB_SYNONYMS = _LEXICONS["VERB_SYNONYMS"]
ACTION_FRAMES = _LEXICONS["ACTION_FRAMES"]
SAME_FRAMES = _LEXICONS["SAME_FRAMES"]
TIME_FLIPS = _LEXICONS["TIME_FLIPS"]
TIME_TEMPLATES = _LEXICONS["TIME_TEMPLATES"]
NUMBER_TEMPLATES = _LEXICONS["NUMBER_TEMPLATES"]
UNIT_FLIPS = _LEXICONS["UNIT_FLIPS"]
UNIT_TEMPLATES = _LEXICONS["UNIT_TEMPLATES"]
SCOPE_BASES = _LEXICONS["SCOPE_BASES"]
NEGATION_TEMPLATES = _LEXICONS["NEGATION_TEMPLATES"]
NEG_X = _LEXICONS["NEG_X"]
NEG_Y = _LEXICONS["NEG_Y"]
NEG_Z = _LEXICONS["NEG_Z"]
ENTITY_SLOTS = _LEXICONS["ENTITY_SLOTS"]

# Whole-question rewordings of one need, with slots; two phrasings of the same intent and the
# same slot value are a paraphrase, the same phrasing with another slot value is not.
# (The phrasings live in pair_intents.json, beside this module.)
INTENTS: list[tuple[list[str], list[str]]] = [
    (entry["phrasings"], entry["slots"])
    for entry in json.loads((Path(__file__).parent / "pair_intents.json").read_text("utf-8"))
]


# -- families ---------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(frame: str, v: str, o: str) -> str:
    return frame.replace("{V}", _cap(v)).format(v=v, o=o)


def action_flip(rng: random.Random) -> tuple[str, str, int]:
    v1, v2 = rng.choice(ACTION_FLIPS)
    frame, obj = rng.choice(ACTION_FRAMES), rng.choice(OBJECTS)
    return _fill(frame, v1, obj), _fill(frame, v2, obj), 0


def synonym_paraphrase(rng: random.Random) -> tuple[str, str, int]:
    v1, v2 = rng.choice(VERB_SYNONYMS)
    obj = rng.choice(OBJECTS)
    if rng.random() < 0.5:
        f1, f2 = rng.choice(SAME_FRAMES)
    else:
        f1 = f2 = rng.choice(ACTION_FRAMES)
    return _fill(f1, v1, obj), _fill(f2, v2, obj), 1


def frame_paraphrase(rng: random.Random) -> tuple[str, str, int]:
    v = rng.choice([v for pair in VERB_SYNONYMS + ACTION_FLIPS for v in pair])
    f1, f2 = rng.choice(SAME_FRAMES)
    obj = rng.choice(OBJECTS)
    return _fill(f1, v, obj), _fill(f2, v, obj), 1


def time_relation(rng: random.Random) -> tuple[str, str, int]:
    template, options = rng.choice(TIME_TEMPLATES)
    t1, t2 = rng.sample(options, 2)
    return template.format(t=t1), template.format(t=t2), 0


def number_unit(rng: random.Random) -> tuple[str, str, int]:
    if rng.random() < 0.6:
        template = rng.choice(NUMBER_TEMPLATES)
        n1 = rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 40, 50, 60, 90, 100])
        n2 = rng.choice([n for n in (1, 2, 3, 5, 7, 9, 10, 14, 16, 25, 45, 80, 120) if n != n1])
        return template.format(n=n1), template.format(n=n2), 0
    u1, u2 = rng.choice(UNIT_FLIPS)
    template = rng.choice(UNIT_TEMPLATES)
    return template.format(u=u1), template.format(u=u2), 0


def entity_swap(rng: random.Random) -> tuple[str, str, int]:
    template, values = rng.choice(ENTITY_SLOTS)
    e1, e2 = rng.sample(values, 2)
    return template.format(e=e1), template.format(e=e2), 0


def scope_change(rng: random.Random) -> tuple[str, str, int]:
    base, qualifiers = rng.choice(SCOPE_BASES)
    narrowed = base[:-1] + " " + rng.choice(qualifiers) + "?"
    return base, narrowed, 0


def negation(rng: random.Random) -> tuple[str, str, int]:
    a, b = rng.choice(NEGATION_TEMPLATES)
    x, y, z = rng.choice(NEG_X), rng.choice(NEG_Y), rng.choice(NEG_Z)
    return a.format(x=x, y=y, z=z), b.format(x=x, y=y, z=z), 0


def _intent(rng: random.Random) -> tuple[list[str], str]:
    phrasings, slots = rng.choice(INTENTS)
    return phrasings, rng.choice(slots)


def _slot(text: str, s: str) -> str:
    return " ".join(text.replace("{S}", _cap(s)).format(s=s).split())


def restructure_paraphrase(rng: random.Random) -> tuple[str, str, int]:
    phrasings, s = _intent(rng)
    p1, p2 = rng.sample(phrasings, 2)
    return _slot(p1, s), _slot(p2, s), 1


def restructure_slot_swap(rng: random.Random) -> tuple[str, str, int]:
    """A rewording and a different slot value: little overlap *and* a different question."""
    phrasings, slots = rng.choice([i for i in INTENTS if len(i[1]) > 1])
    s1, s2 = rng.sample(slots, 2)
    p1, p2 = rng.choice(phrasings), rng.choice(phrasings)
    return _slot(p1, s1), _slot(p2, s2), 0


def near_repeat(rng: random.Random) -> tuple[str, str, int]:
    phrasings, s = _intent(rng)
    text = _slot(rng.choice(phrasings), s)
    edit = rng.choice(["lower", "punct", "please", "space"])
    if edit == "lower":
        other = text.lower()
    elif edit == "punct":
        other = text.rstrip("?") if text.endswith("?") else text + "?"
    elif edit == "please":
        other = "Please, " + text[:1].lower() + text[1:]
    else:
        other = "  " + text.replace(" ", "  ", 1)
    return text, other, 1


FAMILIES: dict[str, Callable[[random.Random], tuple[str, str, int]]] = {
    "paraphrase-restructure": restructure_paraphrase,
    "paraphrase-synonym": synonym_paraphrase,
    "paraphrase-frame": frame_paraphrase,
    "near-repeat": near_repeat,
    "action-flip": action_flip,
    "time-relation": time_relation,
    "number-unit": number_unit,
    "entity-swap": entity_swap,
    "slot-swap": restructure_slot_swap,
    "scope-change": scope_change,
    "negation": negation,
}
# how many pairs each family contributes per "unit" (paraphrases weigh as much as all traps)
WEIGHTS = {
    "paraphrase-restructure": 4,
    "paraphrase-synonym": 3,
    "paraphrase-frame": 2,
    "near-repeat": 1,
    "action-flip": 2,
    "time-relation": 1,
    "number-unit": 1,
    "entity-swap": 1,
    "slot-swap": 2,
    "scope-change": 1,
    "negation": 1,
}


def generate(n: int, *, seed: int, families: list[str] | None = None) -> Iterator[Pair]:
    """About ``n`` distinct pairs from ``families`` (all by default), each family's share in
    proportion to WEIGHTS; a small family stops when it runs out of distinct pairs."""
    rng = random.Random(seed)
    names = families or list(FAMILIES)
    total = sum(WEIGHTS[name] for name in names)
    seen: set[tuple[str, str]] = set()
    for name in names:
        quota, made, attempts = round(n * WEIGHTS[name] / total), 0, 0
        while made < quota and attempts < 20 * quota:
            attempts += 1
            a, b, label = FAMILIES[name](rng)
            if a == b or (a, b) in seen or (b, a) in seen:
                continue
            seen.add((a, b))
            made += 1
            if rng.random() < 0.5:
                a, b = b, a
            yield {"a": a, "b": b, "label": label, "category": name}
