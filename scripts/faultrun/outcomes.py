"""What one request ended in, and what one run recorded."""

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

    @property
    def done_s(self) -> float:
        return self.at_s + self.latency_ms / 1000


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    warmup: list[Outcome] = field(default_factory=list)  # the hot questions, asked once first
    faults: dict[str, float] = field(default_factory=dict)  # fault -> when it started
    restarted_at_s: float | None = None
    back_at_s: float | None = None
    duration_s: float = 0.0  # the load window: every steady request started within it
    elapsed_s: float = 0.0  # until the last request answered (clients finish what they started)
