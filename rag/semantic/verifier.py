"""What a semantic verifier is, and which ones there are.

A verifier reads a pair of questions that already passed the cosine gate and the lexical guards
(``rag.semantic.rule``) and says how sure it is that they ask the same thing. ``VERIFIERS`` maps
each kind (the ``semantic_verifier`` setting) to the loader of its weight file; adding a
verifier is one module with a class that satisfies ``Verifier`` and has ``load(path)``, plus
one line here.

Loaders import their module on first use: the settings import this registry to check the
setting, and the cross-encoder's module imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from rag.errors import ConfigurationError
from rag.protocols import Vector

Scores = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Pair:
    """Two questions and their embedding vectors (unit length): a query and a cached question,
    or the two sides of a labelled pair."""

    a: str
    a_vector: Vector
    b: str
    b_vector: Vector

    @property
    def similarity(self) -> float:
        """Cosine of the two vectors."""
        return float(self.a_vector @ self.b_vector)


class Verifier(Protocol):
    """Scores whether two questions ask the same thing.

    A score is in [0, 1], higher meaning surer; the rule serves a pair when its score is
    ``>= min_score`` (the ``semantic_min_score`` setting, calibrated for one verifier with
    ``rag semantic calibrate``: scores of two kinds are not comparable). Each implementation
    reads what it needs of a ``Pair`` (the vectors, the texts) and batches as it likes.
    """

    @property
    def kind(self) -> str:
        """The name it is registered under in ``VERIFIERS``."""
        ...

    @property
    def offload(self) -> bool:
        """Whether ``scores`` takes long enough (a model forward pass, milliseconds) that an
        event loop should call it in a worker thread."""
        ...

    @property
    def gates(self) -> tuple[float, ...]:
        """The cosine gates where this verifier is meant to work, tried by ``rag semantic
        calibrate --max-false-hit-rate`` unless others are given."""
        ...

    def scores(self, pairs: Sequence[Pair]) -> Scores:
        """One score per pair, in order."""
        ...


Loader = Callable[[Path], Verifier]


def _lazy(target: str) -> Loader:
    """The loader of ``"module:Class"``: imports the module when first called, then
    ``Class.load(path)``."""
    module, _, name = target.partition(":")

    def load(path: Path) -> Verifier:
        return cast(Verifier, getattr(import_module(module), name).load(path))

    return load


VERIFIERS: dict[str, Loader] = {
    "mlp": _lazy("rag.semantic.mlp:MLPVerifier"),
    "cross-encoder": _lazy("rag.semantic.cross_encoder:CrossEncoderVerifier"),
}


def load_verifier(kind: str, path: Path) -> Verifier:
    """The verifier of ``kind`` with the weights in ``path``; a file of another kind, or a
    loader that makes another kind, is a ``ConfigurationError``."""
    if kind not in VERIFIERS:
        raise ConfigurationError(
            f"unknown semantic verifier {kind!r} (registered: {', '.join(VERIFIERS)})"
        )
    verifier = VERIFIERS[kind](path)
    if verifier.kind != kind:
        raise ConfigurationError(f"the loader of {kind!r} made a {verifier.kind!r} verifier")
    return verifier


def check_weight_file(path: Path, arrays: Collection[str], *, kind: str, needs: set[str]) -> None:
    """Refuse a weight file that lacks the arrays of ``kind``: the setting chooses the kind and
    a file of another kind must not be read as this one."""
    missing = sorted(needs - set(arrays))
    if missing:
        raise ConfigurationError(
            f"{path} is not a weight file of the {kind!r} verifier (it has no "
            f"{', '.join(missing)}): "
            "the verifier kind (RAG_SEMANTIC_VERIFIER) chooses how the file is read, and the "
            "file (RAG_SEMANTIC_VERIFIER_PATH) must be of that kind"
        )
