"""What a request costs: LLM prices from ``rag.prices`` (the service's own price table), the
embedding price beside them, and tiktoken counts in the priced models' encodings."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken

from rag.prices import ModelPrice, load_price
from rag.settings import PRICES_FILE
from rag.tokens import SHIPPED_ENCODINGS, get_encoding
from rag.types import Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per 1M tokens: the LLM's as ``rag.prices`` loads it for the service, and the embedding
    model's (0 for a model the table does not list; ``missing`` names those)."""

    llm: ModelPrice
    embedding_model: str
    embedding: float
    taken: str
    missing: tuple[str, ...] = ()

    @classmethod
    def load(cls, model: str, embedding_model: str) -> Prices:
        # rag.prices knows LLM prices only; the embedding price and the table's date are read
        # here, from the same file.
        table = tomllib.loads(PRICES_FILE.read_text())
        models = table.get("models", {})
        listed = {"input", "output"} <= models.get(model, {}).keys()
        emb = models.get(embedding_model, {})
        missing = tuple(
            name
            for name, present in ((model, listed), (embedding_model, "embedding" in emb))
            if not present
        )
        for name in missing:
            log.warning("no price for %r in %s: it counts $0", name, PRICES_FILE)
        return cls(
            llm=load_price(model) if listed else ModelPrice(model=model),
            embedding_model=embedding_model,
            embedding=float(emb.get("embedding", 0.0)),
            taken=str(table.get("taken", "unknown")),
            missing=missing,
        )

    @property
    def model(self) -> str:
        return self.llm.model

    def llm_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.llm.cost(
            Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        )

    def embedding_cost(self, tokens: float) -> float:
        return tokens * self.embedding / 1e6

    def as_dict(self) -> dict[str, Any]:
        """The ``prices`` section of results.json."""
        return {
            "model": self.llm.model,
            "input": self.llm.input,
            "output": self.llm.output,
            "embedding_model": self.embedding_model,
            "embedding": self.embedding,
            "taken": self.taken,
            "missing": self.missing,
        }


class TokenCounter:
    """tiktoken counts in the encoding of the model the tokens are priced at (offline)."""

    def __init__(self, *, llm_model: str, embedding_model: str, cache_dir: Path) -> None:
        self.llm = get_encoding(self._name(llm_model), cache_dir)
        self.embedding = get_encoding(self._name(embedding_model), cache_dir)

    @staticmethod
    def _name(model: str) -> str:
        try:
            name = str(tiktoken.encoding_name_for_model(model))
        except KeyError:
            return "cl100k_base"
        return name if name in SHIPPED_ENCODINGS else "cl100k_base"

    def prompt(self, messages: list[dict[str, str]]) -> int:
        # OpenAI chat format: about 3 tokens of framing per message, 3 to prime the reply.
        return 3 + sum(
            4 + len(self.llm.encode(m["content"], disallowed_special=())) for m in messages
        )

    def text(self, text: str) -> int:
        return len(self.llm.encode(text, disallowed_special=()))

    def query(self, text: str) -> int:
        return len(self.embedding.encode(text, disallowed_special=()))
