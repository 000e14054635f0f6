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

OBJECTS = [
    "my account",
    "two-factor authentication",
    "the VPN",
    "notifications",
    "dark mode",
    "auto-renewal",
    "my subscription",
    "the firewall",
    "location services",
    "cookies",
    "the printer",
    "Bluetooth",
    "my credit card",
    "the mobile app",
    "a shared folder",
    "automatic updates",
    "the newsletter",
    "my order",
    "the guest Wi-Fi",
    "push alerts",
    "the backup schedule",
    "a team member",
    "the API key",
    "a calendar invite",
    "the webcam",
    "my profile picture",
    "the spam filter",
    "a browser extension",
    "my payment method",
    "the loyalty card",
    "a recurring transfer",
    "the parental controls",
    "my email signature",
    "a project board",
    "the company directory",
    "voice mail",
    "the smart thermostat",
    "a gift card",
    "my delivery address",
    "a savings goal",
    "the shopping cart",
    "my playlist",
]

# Opposite actions on the same object (verbs, then the pattern they are used in).
ACTION_FLIPS = [
    ("upload", "download"),
    ("import", "export"),
    ("add", "remove"),
    ("send", "receive"),
    ("start", "stop"),
    ("open", "close"),
    ("create", "delete"),
    ("join", "leave"),
    ("upgrade", "downgrade"),
    ("show", "hide"),
    ("attach", "detach"),
    ("pause", "resume"),
    ("expand", "collapse"),
    ("accept", "decline"),
    ("grant access to", "revoke access to"),
    ("turn on", "turn off"),
    ("increase the limit of", "decrease the limit of"),
    ("raise the price of", "lower the price of"),
    ("save", "discard"),
    ("merge", "split"),
    ("compress", "extract"),
    ("enter", "exit"),
    ("deposit money into", "withdraw money from"),
    ("buy", "sell"),
    ("borrow", "lend"),
    ("push", "pull"),
    ("zoom in on", "zoom out of"),
    ("move up", "move down"),
    ("speed up", "slow down"),
    ("shrink", "enlarge"),
    ("encourage", "prevent"),
    ("allow", "forbid"),
    ("keep", "cancel"),
    ("restore", "erase"),
]
VERB_SYNONYMS = [
    ("buy", "purchase"),
    ("cancel", "terminate"),
    ("fix", "repair"),
    ("start", "begin"),
    ("get", "obtain"),
    ("change", "modify"),
    ("find", "locate"),
    ("contact", "reach"),
    ("remove", "delete"),
    ("turn on", "switch on"),
    ("turn off", "switch off"),
    ("set up", "configure"),
    ("check", "look up"),
    ("update", "edit"),
    ("view", "see"),
    ("stop", "halt"),
    ("speed up", "accelerate"),
    ("send", "transmit"),
    ("choose", "pick"),
    ("share", "send a link to"),
    ("open", "launch"),
    ("reset", "reinitialise"),
    ("recover", "retrieve"),
    ("renew", "extend"),
    ("transfer", "move"),
    ("track", "follow"),
]
ACTION_FRAMES = [
    "How do I {v} {o}?",
    "How can I {v} {o}?",
    "What is the way to {v} {o}?",
    "Can I {v} {o} from my phone?",
    "Why am I unable to {v} {o}?",
    "What happens if I {v} {o}?",
    "Is there a shortcut to {v} {o}?",
    "Where is the option to {v} {o}?",
    "Who is allowed to {v} {o}?",
    "How long does it take to {v} {o}?",
    "Steps to {v} {o}?",
    "{V} {o}: how?",
    "Is it safe to {v} {o}?",
    "What do I need to {v} {o}?",
]
SAME_FRAMES = [  # frames that mean the same thing as each other
    ("How do I {v} {o}?", "How can I {v} {o}?"),
    ("How do I {v} {o}?", "What are the steps to {v} {o}?"),
    ("How can I {v} {o}?", "What's the procedure to {v} {o}?"),
    ("Is it possible to {v} {o}?", "Can I {v} {o}?"),
    ("Where do I go to {v} {o}?", "Where is the option to {v} {o}?"),
    ("How do I {v} {o}?", "Steps to {v} {o}?"),
    ("Why can't I {v} {o}?", "Why am I unable to {v} {o}?"),
    ("What happens if I {v} {o}?", "What are the consequences of trying to {v} {o}?"),
    ("Can someone explain how to {v} {o}?", "How does one {v} {o}?"),
]

TIME_FLIPS = [
    ("before", "after"),
    ("earlier than", "later than"),
    ("at the start of", "at the end of"),
    ("at the beginning of", "at the end of"),
    ("during", "after"),
    ("before", "during"),
    ("in the first week of", "in the last week of"),
    ("the previous", "the next"),
    ("yesterday", "tomorrow"),
    ("last month", "next month"),
    ("in the morning", "in the evening"),
    ("since", "until"),
    ("last year", "next year"),
    ("past", "upcoming"),
]
TIME_TEMPLATES = [
    ("Can I cancel {t} the trial ends?", ["before", "after"]),
    ("Am I charged {t} the billing period?", ["at the start of", "at the end of"]),
    ("Do I get a refund if I cancel {t} the flight departs?", ["before", "after"]),
    ("Should I take the medicine {t} eating?", ["before", "after", "during"]),
    ("What should I do {t} the exam?", ["before", "after", "during"]),
    ("Is it better to stretch {t} running?", ["before", "after"]),
    ("Can I check in {t} noon?", ["earlier than", "later than"]),
    ("What were the sales figures {t}?", ["yesterday", "last month", "last year"]),
    ("What is the weather forecast for {t}?", ["yesterday", "tomorrow"]),
    ("Which invoices are due {t} month?", ["the previous", "the next"]),
    ("Are payments processed {t} the month?", ["at the beginning of", "at the end of"]),
    ("How much will I save if I pay {t} the due date?", ["before", "after"]),
    ("What changed in the app {t} update?", ["the previous", "the next"]),
    ("Is the gym busier {t}?", ["in the morning", "in the evening"]),
    ("Which events are listed as {t}?", ["past", "upcoming"]),
    ("What happens to my data {t} I delete my account?", ["before", "after"]),
    ("Are deliveries made {t} the holidays?", ["before", "after", "during"]),
    ("Do I need to water the plants {t} sunset?", ["before", "after"]),
    ("How many users signed up {t} the launch?", ["before", "after", "since"]),
    ("Which tasks are scheduled for {t} sprint?", ["the previous", "the next"]),
]

NUMBER_TEMPLATES = [
    "How much does shipping cost for a {n} kg parcel?",
    "Can I return an item after {n} days?",
    "Is {n} GB of RAM enough for video editing?",
    "How long does it take to walk {n} km?",
    "What is the fee for withdrawing {n} dollars?",
    "Can {n} people share one family plan?",
    "Is it normal for a baby to sleep {n} hours a day?",
    "How many calories do I burn running {n} miles?",
    "What does a {n}-year warranty cover?",
    "How do I split a bill between {n} people?",
    "Is a {n} Mbps connection fast enough for streaming?",
    "What size bag fits a {n} inch laptop?",
    "How much water should I drink if I weigh {n} kg?",
    "Can I get a mortgage with a {n} percent deposit?",
    "What should I do if my child has a fever of {n} degrees?",
]
UNIT_FLIPS = [
    ("5 km", "5 miles"),
    ("10 MB", "10 GB"),
    ("30 degrees Celsius", "30 degrees Fahrenheit"),
    ("2 liters", "2 gallons"),
    ("100 grams", "100 pounds"),
    ("3 hours", "3 days"),
    ("12 months", "12 weeks"),
    ("50 euros", "50 dollars"),
    ("1 TB", "1 GB"),
    ("20 minutes", "20 seconds"),
    ("6 feet", "6 meters"),
    ("500 ml", "500 liters"),
]
UNIT_TEMPLATES = [
    "How long does it take to download {u}?",
    "Is {u} a lot?",
    "How do I convert {u}?",
    "How much does it cost to ship {u}?",
    "What can I do with {u}?",
    "Is a limit of {u} enough for a small team?",
]

ENTITY_SLOTS: list[tuple[str, list[str]]] = [
    (
        "What is the best time of year to visit {e}?",
        ["Japan", "Italy", "Peru", "Iceland", "Morocco", "Vietnam", "Canada", "Greece"],
    ),
    (
        "How do I install {e} on my laptop?",
        ["Python", "Docker", "Node.js", "Java", "PostgreSQL", "Git", "Rust", "Ruby"],
    ),
    (
        "What documents do I need to open a bank account in {e}?",
        ["Germany", "Spain", "the UK", "France", "Ireland", "Portugal", "Sweden", "Poland"],
    ),
    (
        "How do I move my contacts from {e}?",
        ["Android to iPhone", "iPhone to Android", "Gmail to Outlook", "Outlook to Gmail"],
    ),
    (
        "Which is the best laptop for {e}?",
        ["gaming", "programming", "video editing", "students", "travel", "music production"],
    ),
    (
        "How do I cook {e} in an air fryer?",
        ["chicken wings", "salmon", "potatoes", "tofu", "broccoli", "pork chops", "eggs"],
    ),
    (
        "What are the side effects of {e}?",
        ["ibuprofen", "paracetamol", "aspirin", "melatonin", "caffeine", "antihistamines"],
    ),
    (
        "How do I get from {e} by train?",
        [
            "Paris to London",
            "London to Paris",
            "Berlin to Prague",
            "Prague to Berlin",
            "Rome to Milan",
            "Milan to Rome",
        ],
    ),
    (
        "Why is my {e} not charging?",
        ["iPhone", "laptop", "electric toothbrush", "smartwatch", "tablet", "e-bike"],
    ),
    (
        "Where can I watch {e} online?",
        ["the Champions League", "the Olympics", "Formula 1", "the NBA finals", "Wimbledon"],
    ),
    ("Who is the CEO of {e}?", ["Apple", "Google", "Microsoft", "Amazon", "Tesla", "Netflix"]),
    (
        "How do I pay my {e} bill online?",
        ["electricity", "water", "gas", "phone", "internet", "credit card"],
    ),
    (
        "What is the visa process for {e} citizens travelling to the US?",
        ["Indian", "Brazilian", "Nigerian", "Chinese", "Mexican", "Filipino"],
    ),
    (
        "What is the difference between {e}?",
        [
            "a Roth IRA and a traditional IRA",
            "a 401k and a pension",
            "stocks and bonds",
            "TCP and UDP",
            "RAM and storage",
            "a virus and a bacterium",
        ],
    ),
]

SCOPE_BASES = [
    ("How do I learn Python?", ["for data science", "in one month", "as a child", "for free"]),
    (
        "What are the visa requirements for Japan?",
        ["for students", "for a work trip", "for a 6-month stay"],
    ),
    ("How do I lose weight?", ["after pregnancy", "without exercise", "in my legs"]),
    (
        "What is the best way to invest money?",
        ["for retirement", "in real estate", "as a teenager"],
    ),
    (
        "How do I change my password?",
        ["on the mobile app", "for my work account", "without my old password"],
    ),
    ("What are the symptoms of diabetes?", ["in children", "in dogs", "in the early stages"]),
    ("How do I export my data?", ["to CSV", "from last year only", "for one project"]),
    ("What is the return policy?", ["for sale items", "for electronics", "outside the EU"]),
    (
        "How can I improve my credit score?",
        ["in 30 days", "with no credit history", "after bankruptcy"],
    ),
    (
        "How do I get a refund?",
        ["for a cancelled flight", "for a digital purchase", "after 30 days"],
    ),
    (
        "What should I pack for a trip?",
        ["to Iceland in winter", "with a baby", "for a business meeting"],
    ),
    (
        "How do I write a cover letter?",
        ["for an internship", "with no experience", "for a career change"],
    ),
]

NEGATION_TEMPLATES = [
    ("Is {x} safe for dogs?", "Is {x} not safe for dogs?"),
    ("Why does my {y} turn on by itself?", "Why doesn't my {y} turn on?"),
    ("What can I bring on the plane?", "What can't I bring on the plane?"),
    ("Which foods are allowed during pregnancy?", "Which foods are not allowed during pregnancy?"),
    (
        "Should I tell my employer about my diagnosis?",
        "Should I not tell my employer about my diagnosis?",
    ),
    ("Does the warranty cover water damage?", "Why doesn't the warranty cover water damage?"),
    ("Is {x} good for your health?", "Is {x} bad for your health?"),
    ("Why is my {y} working slowly?", "Why is my {y} not working at all?"),
    ("Do I need a visa to visit Brazil?", "Do I not need a visa to visit Brazil?"),
    ("Can I pay with cash?", "Can I never pay with cash?"),
    ("What happens if I pay my {z} on time?", "What happens if I don't pay my {z} on time?"),
    ("Is it possible to live with one kidney?", "Is it impossible to live with one kidney?"),
    ("Why do people like {x}?", "Why do people dislike {x}?"),
    ("Does {x} contain gluten?", "Is {x} free of gluten?"),
]
NEG_X = ["chocolate", "coffee", "garlic", "cheese", "avocado", "peanut butter", "rice", "honey"]
NEG_Y = ["laptop", "phone", "router", "TV", "printer", "car radio", "dishwasher"]
NEG_Z = ["rent", "taxes", "credit card", "phone bill", "student loan", "mortgage"]

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
