"""What one request ended in, what one document change did, and what one run recorded."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    at_s: float  # when the request started, from the start of the run
    query: str
    status: int  # HTTP status; 0: no response at all
    latency_ms: float
    llm: str = ""
    answer: str = ""
    error: str = ""
    endpoint: str = "/ask"
    end: str = ""  # streams: "done", "error" (its status in ``error``), "cut" or "left"
    role: str = ""  # "burst", "slow", "after-slow" or "" (the steady clients)
    sources: list[str] = field(default_factory=list)  # the texts of the answer's sources
    sources_at_s: float | None = None  # when they arrived (a stream's ``meta`` event)

    @property
    def done_s(self) -> float:
        return self.at_s + self.latency_ms / 1000


@dataclass
class DocumentChange:
    """One ``POST /documents`` that replaced a watched document during a fault."""

    fault: str
    doc_id: str
    question: str  # the hot question its text answers
    old_texts: list[str]  # every text the document had before: none may be served after the ack
    new_text: str
    at_s: float  # when the POST was sent, from the start of the run
    status: int  # 0: no response
    acked_at_s: float | None = None  # when its 201 arrived; None: not acknowledged
    corpus_version: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    warmup: list[Outcome] = field(default_factory=list)  # the hot questions, asked once first
    faults: dict[str, float] = field(default_factory=dict)  # fault -> when it started
    redis_back_at_s: dict[str, float] = field(default_factory=dict)  # fault -> Redis answers again
    changes: list[DocumentChange] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # fault -> what it saw of Redis
    duration_s: float = 0.0  # the load window: every steady request started within it
    elapsed_s: float = 0.0  # until the last request answered (clients finish what they started)
