"""Lexical guards for the semantic cache: cheap checks that reject the pairs embeddings get
wrong. Two questions can be close in embedding space and still ask different things; these
catch the classic traps:

- negation flips ("Is X safe?" / "Is X not safe?"),
- antonym flips ("when does the store open" / "... close"),
- different numbers, dates, quantities ("2 eggs" / "3 eggs", "in 2020" / "in 2021"),
- different or swapped named entities ("Paris to London" / "London to Paris"),
- narrowed or widened scope ("learn Python" / "learn Python for data science").

Everything here is a pure function of the two texts, so the live cache and ``rag semantic eval``
share it exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,:/]\d+)*(?:st|nd|rd|th|s|k|m|%)?")

_NEGATIONS = frozenset(
    "not no never none nobody nothing nowhere neither nor cannot without "
    "isnt arent wasnt werent dont doesnt didnt cant couldnt wont wouldnt shouldnt hasnt "
    "havent hadnt mustnt neednt aint".split()
)

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": "30",
        "forty": "40",
        "fifty": "50",
        "sixty": "60",
        "seventy": "70",
        "eighty": "80",
        "ninety": "90",
        "hundred": "100",
        "thousand": "1000",
        "million": "1e6",
        "billion": "1e9",
        "trillion": "1e12",
        "first": "1st",
        "second": "2nd",
        "third": "3rd",
        "fourth": "4th",
        "fifth": "5th",
        "last": "last",
        "half": "0.5",
        "double": "x2",
        "twice": "x2",
        "triple": "x3",
        "once": "x1",
        "single": "x1",
        "dozen": "12",
    }
)
_TIME_WORDS = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday "
    "morning evening night weekend weekday spring summer autumn fall winter".split()
)
# "may" and "march" and "second" are also ordinary words; only treat them as dates/numbers
# when another date word or a number is near. Kept simple: "may" is dropped (too ambiguous).
_AMBIGUOUS_TIME = frozenset({"may", "march", "fall", "second"})

_ANTONYMS = [
    ("open", "close"),
    ("open", "closed"),
    ("opening", "closing"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("raise", "lower"),
    ("rise", "fall"),
    ("up", "down"),
    ("buy", "sell"),
    ("buying", "selling"),
    ("best", "worst"),
    ("better", "worse"),
    ("good", "bad"),
    ("more", "less"),
    ("more", "fewer"),
    ("most", "least"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("high", "low"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("enable", "disable"),
    ("add", "remove"),
    ("add", "delete"),
    ("start", "stop"),
    ("start", "end"),
    ("begin", "end"),
    ("true", "false"),
    ("hot", "cold"),
    ("allow", "deny"),
    ("allow", "block"),
    ("include", "exclude"),
    ("win", "lose"),
    ("gain", "lose"),
    ("first", "last"),
    ("cheap", "expensive"),
    ("cheapest", "most expensive"),
    ("before", "after"),
    ("above", "below"),
    ("inside", "outside"),
    ("import", "export"),
    ("input", "output"),
    ("login", "logout"),
    ("upload", "download"),
    ("encrypt", "decrypt"),
    ("accept", "reject"),
    ("pass", "fail"),
    ("success", "failure"),
    ("safe", "dangerous"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("husband", "wife"),
    ("old", "new"),
    ("old", "young"),
    ("older", "younger"),
    ("big", "small"),
    ("large", "small"),
    ("long", "short"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("early", "late"),
    ("right", "left"),
    ("north", "south"),
    ("east", "west"),
    ("love", "hate"),
    ("like", "dislike"),
    ("positive", "negative"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("benefits", "risks"),
    ("rich", "poor"),
    ("win", "loss"),
    ("profit", "loss"),
    ("ascending", "descending"),
    ("sync", "async"),
    ("push", "pull"),
    ("read", "write"),
    ("get", "set"),
    ("client", "server"),
    ("send", "receive"),
    ("import", "export"),
    ("with", "without"),
    ("always", "sometimes"),
    ("all", "some"),
    ("before", "during"),
    ("happy", "sad"),
    ("healthy", "unhealthy"),
    ("wet", "dry"),
]
_ANTONYM_OF: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYMS:
    if " " in _a or " " in _b:
        continue
    _ANTONYM_OF[_a] = _ANTONYM_OF.get(_a, frozenset()) | {_b}
    _ANTONYM_OF[_b] = _ANTONYM_OF.get(_b, frozenset()) | {_a}

_STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for from with about as into onto over under "
    "is are was were be been being am do does did doing done have has had having "
    "i me my mine we us our you your he him his she her it its they them their this that these "
    "those there here what which who whom whose when where why how whats hows "
    "can could should would will shall might must may "
    "so than then too very just also only even still yet ever "
    "any some such each every other another same own "
    "s t d ll re ve m".split()
)
# Words that change how a question is phrased, not what it asks ("what is the best way to X"
# and "how do I X" ask the same); they do not count as narrowing a question's scope.
_FILLER = frozenset(
    "best good great better way ways method methods tips tip easiest easy simple simplest "
    "really actually exactly possible possibly someone somebody people person one thing things "
    "know tell explain mean meaning means get go make use using used find help please "
    "quickly quick ideal proper properly correct correctly right effective effectively "
    "recommended common main important top become becoming".split()
)
# Words around which a swap of the two sides changes the question: "is A better than B",
# "A vs B", "A or B"; and "from A to B" when both say "from".
_PIVOTS = frozenset({"than", "vs", "versus", "or"})
_WH = ("what", "why", "how", "when", "where", "who", "which", "whom", "whose")


def _stem(word: str) -> str:
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            return base + "y" if suffix == "ies" else base
    return word


@dataclass(frozen=True, slots=True)
class QueryFacts:
    """What the guards compare, extracted once per query text."""

    words: frozenset[str]  # lowercased tokens
    content: frozenset[str]  # stemmed content words (no stopwords)
    numbers: frozenset[str]  # numbers, number words, ordinals and date words, normalized
    negated: bool
    entities: tuple[str, ...]  # lowercased capitalized words (not sentence-initial), in order
    wh: frozenset[str]  # question words
    sequence: tuple[str, ...]  # lowercased tokens in order


@lru_cache(maxsize=4096)
def facts(text: str) -> QueryFacts:
    raw = _WORD.findall(text)
    words = [w.lower().replace("'", "") for w in raw]
    numbers = set()
    for w in words:
        if w[0].isdigit():
            numbers.add(w.replace(",", ""))
        elif w in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[w])
        elif w in _TIME_WORDS and w not in _AMBIGUOUS_TIME:
            numbers.add(w)
    entities = [
        w.lower()
        for i, w in enumerate(raw)
        if w != "I"
        and (
            (len(w) > 1 and any(c.isupper() for c in w[1:]))  # AWS, iOS, PostgreSQL
            or (
                w[0].isupper()
                and i > 0
                and not raw[i - 1][0].isdigit()
                and w.lower() not in _STOPWORDS
            )
        )
    ]
    negated = any(w in _NEGATIONS for w in words)
    return QueryFacts(
        words=frozenset(words),
        # numbers are compared on their own (above), not as content words
        content=frozenset(
            _stem(w)
            for w in words
            if w not in _STOPWORDS and not w[0].isdigit() and w not in _NUMBER_WORDS
        ),
        numbers=frozenset(numbers),
        negated=negated,
        entities=tuple(dict.fromkeys(entities)),
        wh=frozenset(w for w in words if w in _WH),
        sequence=tuple(words),
    )


def _sides(x: QueryFacts) -> tuple[set[str], set[str]] | None:
    """Content words before and after the pivot of a comparison or a from-to, if any."""
    seq = x.sequence
    pivots = [i for i, w in enumerate(seq) if w in _PIVOTS or (w == "to" and "from" in seq)]
    if not pivots:
        return None
    p = pivots[0]
    return _content(seq[:p]), _content(seq[p + 1 :])


def _content(words: tuple[str, ...]) -> set[str]:
    return {_stem(w) for w in words if w not in _STOPWORDS}


def trap(a: QueryFacts, b: QueryFacts) -> str | None:
    """The name of the first trap the pair falls into, or ``None``."""
    if a.negated != b.negated:
        return "negation"
    if a.numbers != b.numbers:
        return "number"
    for x, y in ((a, b), (b, a)):
        for word in x.words - y.words:
            if _ANTONYM_OF.get(word, frozenset()) & (y.words - x.words):
                return "antonym"
    for x, y in ((a, b), (b, a)):
        if any(e not in y.words for e in x.entities):
            return "entity"
    shared = [e for e in a.entities if e in b.entities]
    if shared != [e for e in b.entities if e in a.entities]:
        return "entity-order"
    sides_a, sides_b = _sides(a), _sides(b)
    if sides_a and sides_b and (sides_a[0] & sides_b[1]) and (sides_a[1] & sides_b[0]):
        return "swap"
    for x, y in ((a, b), (b, a)):
        extra = x.content - y.content - _FILLER
        if extra and (y.content - _FILLER) <= x.content:
            return "scope"
    return None
