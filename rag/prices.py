"""LLM prices from ``rag/config/prices.toml``, to count what cache hits save."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass

from rag.settings import PRICES_FILE
from rag.types import Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens; zero for a model with no listed price."""

    model: str = ""
    input: float = 0.0
    output: float = 0.0

    def cost(self, usage: Usage) -> float:
        return (usage.prompt_tokens * self.input + usage.completion_tokens * self.output) / 1e6


def load_price(model: str) -> ModelPrice:
    row = tomllib.loads(PRICES_FILE.read_text()).get("models", {}).get(model)
    if row is None:
        log.warning("no price for %r in %s: savings are counted as $0", model, PRICES_FILE)
        return ModelPrice(model=model)
    return ModelPrice(model=model, input=float(row["input"]), output=float(row["output"]))
