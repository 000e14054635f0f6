"""Write ``tests/data/semantic_eval.jsonl``: the semantic cache's own evaluation set, written by
hand from families the verifier is *not* trained on (``scripts/pair_families.py`` holds the
training families; nothing here is imported by training).

Held-out families:
- ``paraphrase-reword``: whole-question rewordings of support/FAQ needs absent from training,
  with little word overlap ("What time do you close on Sunday?" / "Sunday closing hours?" kind);
- ``prefix-antonym``: meaning flipped by a prefix (enable/disable, valid/invalid, lock/unlock);
- ``comparison-flip``: the opposite comparison (faster/slower, cheaper/more expensive);
- ``complementary-qualifier``: the complementary qualifier (with/without, domestic/international);
- ``role-swap``: the same two roles, swapped (can a tenant evict a landlord?).

Deterministic: ``python scripts/make_eval_set.py`` rewrites the same file.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "semantic_eval.jsonl"

# Whole-question rewordings of needs absent from training: each entry's phrasings all mean the
# same thing for a given slot value ("" when the need has no slot).
REWORDS: list[tuple[list[str], list[str]]] = [
    (entry["phrasings"], entry["slots"])
    for entry in json.loads((Path(__file__).parent / "eval_set_rewords.json").read_text("utf-8"))
]

PREFIX_VERBS = [
    ("enable", "disable"),
    ("activate", "deactivate"),
    ("lock", "unlock"),
    ("install", "uninstall"),
    ("connect", "disconnect"),
    ("subscribe to", "unsubscribe from"),
    ("mute", "unmute"),
    ("block", "unblock"),
    ("follow", "unfollow"),
    ("pin", "unpin"),
    ("archive", "unarchive"),
    ("freeze", "unfreeze"),
    ("encrypt", "decrypt"),
    ("mount", "unmount"),
    ("pair", "unpair"),
    ("link", "unlink"),
    ("assign", "unassign"),
    ("select", "deselect"),
    ("register", "deregister"),
    ("authorize", "deauthorize"),
    ("load", "unload"),
    ("pack", "unpack"),
    ("tag", "untag"),
    ("publish", "unpublish"),
    ("share", "unshare"),
    ("like", "unlike"),
    ("do", "undo"),
    ("bookmark", "unbookmark"),
    ("zip", "unzip"),
    ("verify", "unverify"),
]
PREFIX_OBJECTS = [
    "my SIM card",
    "the smart lock",
    "the guest account",
    "an employee's badge",
    "my bank card",
    "the shared calendar",
    "the tablet",
    "this device",
    "the group chat",
    "the repository",
    "a USB drive",
    "a contact",
    "the admin role",
    "the old post",
]
PREFIX_FRAMES = [
    "How do I {v} {o}?",
    "Can I {v} {o} remotely?",
    "Why can't I {v} {o}?",
    "What happens when I {v} {o}?",
    "Is there a way to {v} {o} in bulk?",
    "Who has permission to {v} {o}?",
]
PREFIX_ADJECTIVES = [
    ("available", "unavailable"),
    ("visible", "invisible"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("secure", "insecure"),
    ("valid", "invalid"),
    ("eligible", "ineligible"),
    ("refundable", "non-refundable"),
    ("compatible", "incompatible"),
    ("accessible", "inaccessible"),
    ("reversible", "irreversible"),
    ("active", "inactive"),
    ("official", "unofficial"),
    ("limited", "unlimited"),
    ("paid", "unpaid"),
    ("read", "unread"),
    ("verified", "unverified"),
    ("supported", "unsupported"),
    ("responsive", "unresponsive"),
    ("taxable", "non-taxable"),
    ("allowed", "disallowed"),
    ("connected", "disconnected"),
]
ADJ_FRAMES = [
    "Why is my {t} {a}?",
    "What makes a {t} {a}?",
    "How can I tell if the {t} is {a}?",
    "What should I do when the {t} shows as {a}?",
    "When does a {t} become {a}?",
]
ADJ_THINGS = [
    "coupon",
    "ticket",
    "account",
    "listing",
    "message",
    "membership",
    "document",
    "transaction",
]

COMPARISONS = [
    ("faster", "slower"),
    ("cheaper", "more expensive"),
    ("better", "worse"),
    ("bigger", "smaller"),
    ("safer", "more dangerous"),
    ("easier", "harder"),
    ("heavier", "lighter"),
    ("stronger", "weaker"),
    ("longer-lasting", "shorter-lived"),
    ("healthier", "less healthy"),
    ("more reliable", "less reliable"),
    ("more popular", "less popular"),
    ("more efficient", "less efficient"),
    ("warmer", "colder"),
    ("louder", "quieter"),
    ("more accurate", "less accurate"),
]
COMPARED = [
    ("trains", "planes"),
    ("an SSD", "a hard drive"),
    ("renting", "buying"),
    ("tea", "coffee"),
    ("Python", "Java"),
    ("a heat pump", "a gas boiler"),
    ("LED bulbs", "halogen bulbs"),
    ("walking", "cycling"),
    ("a Kindle", "a paper book"),
    ("5G", "4G"),
    ("wool", "cotton"),
    ("electric cars", "diesel cars"),
]
COMPARE_FRAMES = [
    "Is {x} {c} than {y}?",
    "Why is {x} {c} than {y}?",
    "In what way is {x} {c} than {y}?",
    "Which is {c}, {x} or {y}?",
    "Are there cases where {x} is {c} than {y}?",
]
SUPERLATIVES = [
    ("fastest", "slowest"),
    ("cheapest", "most expensive"),
    ("best", "worst"),
    ("safest", "most dangerous"),
    ("easiest", "hardest"),
    ("most popular", "least popular"),
]
SUPERLATIVE_FRAMES = [
    "What is the {c} way to get to the airport?",
    "Which is the {c} laptop under $1000?",
    "What is the {c} programming language to learn?",
    "Which airline is the {c} in Europe?",
    "What's the {c} time of year to fly?",
]

QUALIFIERS = [
    ("with", "without"),
    ("domestic", "international"),
    ("public", "private"),
    ("internal", "external"),
    ("online", "in-store"),
    ("indoor", "outdoor"),
    ("paid", "free"),
    ("monthly", "annual"),
    ("minimum", "maximum"),
    ("incoming", "outgoing"),
    ("mandatory", "optional"),
    ("manual", "automatic"),
    ("primary", "secondary"),
    ("beginner", "advanced"),
    ("full-time", "part-time"),
    ("wired", "wireless"),
    ("personal", "business"),
    ("one-way", "return"),
    ("weekday", "weekend"),
    ("short-term", "long-term"),
    ("first-class", "economy"),
    ("front", "rear"),
    ("upper", "lower"),
    ("new", "existing"),
]
QUALIFIER_FRAMES = [
    "What is the fee for a {q} transfer?",
    "How do I set up a {q} account?",
    "Do {q} customers get a discount?",
    "What's the limit on {q} calls?",
    "Are {q} courses available this term?",
    "Which documents are needed for {q} orders?",
    "How long does a {q} shipment take?",
    "Is there a {q} plan for teams?",
    "What are the rules for {q} parking?",
    "Can I change a {q} ticket?",
]
WITH_FRAMES = [
    "Can I fly {q} a passport?",
    "Can I rent a car {q} a credit card?",
    "Is it possible to open an account {q} proof of address?",
    "Can I travel {q} a visa?",
    "Does the laptop come {q} a charger?",
    "Can I install the app {q} an account?",
]

ROLES = [
    ("landlord", "tenant"),
    ("employer", "employee"),
    ("buyer", "seller"),
    ("doctor", "patient"),
    ("teacher", "student"),
    ("parent", "child"),
    ("customer", "merchant"),
    ("sender", "recipient"),
    ("admin", "user"),
    ("borrower", "lender"),
    ("driver", "passenger"),
    ("host", "guest"),
]
ROLE_FRAMES = [
    "Can a {x} sue a {y}?",
    "What does a {x} owe a {y}?",
    "Can a {x} cancel the contract with a {y}?",
    "How should a {x} give notice to a {y}?",
    "Can the {x} refuse to pay the {y}?",
    "What rights does a {x} have against a {y}?",
    "Is a {x} allowed to record a {y}?",
]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _slot(text: str, s: str) -> str:
    return " ".join(text.replace("{S}", _cap(s)).format(s=s).split())


def rewords() -> list[tuple[str, str, int, str]]:
    out = []
    for phrasings, slots in REWORDS:
        for s in slots:
            for p1, p2 in itertools.combinations(phrasings, 2):
                out.append((_slot(p1, s), _slot(p2, s), 1, "paraphrase-reword"))
    return out


def traps(rng: random.Random) -> list[tuple[str, str, int, str]]:
    out = []
    for v1, v2 in PREFIX_VERBS:
        for frame in rng.sample(PREFIX_FRAMES, 4):
            o = rng.choice(PREFIX_OBJECTS)
            out.append((frame.format(v=v1, o=o), frame.format(v=v2, o=o), 0, "prefix-antonym"))
    for a1, a2 in PREFIX_ADJECTIVES:
        for frame in rng.sample(ADJ_FRAMES, 4):
            t = rng.choice(ADJ_THINGS)
            out.append((frame.format(t=t, a=a1), frame.format(t=t, a=a2), 0, "prefix-antonym"))
    for c1, c2 in COMPARISONS:
        for x, y in rng.sample(COMPARED, 6):
            frame = rng.choice(COMPARE_FRAMES)
            out.append(
                (frame.format(x=x, y=y, c=c1), frame.format(x=x, y=y, c=c2), 0, "comparison-flip")
            )
    for c1, c2 in SUPERLATIVES:
        for frame in rng.sample(SUPERLATIVE_FRAMES, 3):
            out.append((frame.format(c=c1), frame.format(c=c2), 0, "comparison-flip"))
    for q1, q2 in QUALIFIERS[1:]:
        for frame in rng.sample(QUALIFIER_FRAMES, 6):
            out.append((frame.format(q=q1), frame.format(q=q2), 0, "complementary-qualifier"))
    for frame in WITH_FRAMES:
        out.append(
            (frame.format(q="with"), frame.format(q="without"), 0, "complementary-qualifier")
        )
    for x, y in ROLES:
        for frame in ROLE_FRAMES:
            out.append((frame.format(x=x, y=y), frame.format(x=y, y=x), 0, "role-swap"))
    return out


def main() -> None:
    rng = random.Random(15)
    rows = rewords() + traps(rng)
    seen: set[tuple[str, str]] = set()
    with OUT.open("w", encoding="utf-8") as out:
        for a, b, label, category in rows:
            if a == b or (a, b) in seen:
                continue
            seen.add((a, b))
            if rng.random() < 0.5:
                a, b = b, a
            out.write(json.dumps({"a": a, "b": b, "label": label, "category": category}) + "\n")
    print(f"wrote {len(seen)} pairs to {OUT}")


if __name__ == "__main__":
    main()
