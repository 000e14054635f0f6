"""Fine-tuning the cross-encoder verifier on labelled pairs (``rag semantic train``), on CPU.

Only the top ``trained`` layers and the head learn; the layers below them run without
gradients, which is what keeps a run of ~20k pairs at 64 tokens to minutes on one core and
the shipped file to a few MB. Each pair is shown in a random order every epoch, so the score
does not depend on which question was cached first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rag.semantic.cross_encoder import (
    PairEncoder,
    base_model_path,
    encode_pairs,
    load_weights,
    make_tokenizer,
    save_weights,
)

_LOSS = torch.nn.BCEWithLogitsLoss()


@dataclass(frozen=True)
class TrainingPlan:
    layers: int = 6  # encoder depth used (MiniLM has 6)
    trained: int = 2  # top layers that learn
    max_length: int = 64  # tokens per pair
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    seed: int = 0


def train_cross_encoder(
    lines: Sequence[dict[str, Any]],
    out: Path,
    *,
    plan: TrainingPlan,
    progress: Any = None,
    checkpoint_every: int = 0,
    start_from: Path | None = None,
) -> None:
    """Fine-tune on ``lines`` (``{"a", "b", "label"}``) and write the weight file ``out``.
    ``progress``: a tqdm-like object (``update(n)``, ``set_postfix``), or None.
    ``checkpoint_every``: also write ``out`` every that many steps (0: only at the end).
    ``start_from``: a weight file of an earlier run to continue from (same layers)."""
    torch.manual_seed(plan.seed)
    rng = random.Random(plan.seed)
    base = base_model_path()
    tokenizer = make_tokenizer(base, plan.max_length)
    model = _load_model(base, plan, start_from)
    frozen = plan.layers - plan.trained
    steps = plan.epochs * ((len(lines) + plan.batch_size - 1) // plan.batch_size)
    optimizer, scheduler = _optimizer_and_schedule(model, plan, steps)
    running = 0.0
    for _ in range(plan.epochs):
        order = list(range(len(lines)))
        rng.shuffle(order)
        for start in range(0, len(order), plan.batch_size):
            batch = [lines[i] for i in order[start : start + plan.batch_size]]
            pairs = [(x["a"], x["b"]) if rng.random() < 0.5 else (x["b"], x["a"]) for x in batch]
            labels = torch.tensor([float(x["label"]) for x in batch])
            value = _train_batch(
                model, encode_pairs(tokenizer, pairs), labels, frozen, optimizer, scheduler
            )
            running = 0.98 * running + 0.02 * value if running else value
            if progress is not None:
                progress.update(len(batch))
                progress.set_postfix(loss=f"{running:.3f}")
            if checkpoint_every and scheduler.last_epoch % checkpoint_every == 0:
                _save(model, out, plan)
    _save(model, out, plan)


def _load_model(base: Path, plan: TrainingPlan, start_from: Path | None) -> PairEncoder:
    """The base encoder (optionally an earlier run's weights on top), with only the top
    ``plan.trained`` layers and the head left trainable."""
    model = PairEncoder(layers=plan.layers)
    model.load_base(base)
    if start_from is not None:
        model.load_state_dict(load_weights(start_from), strict=False)
    frozen = plan.layers - plan.trained
    for name, parameter in model.named_parameters():
        learns = name.startswith("head.") or (
            name.startswith("layers.") and int(name.split(".")[1]) >= frozen
        )
        parameter.requires_grad_(learns)
    return model


def _optimizer_and_schedule(
    model: PairEncoder, plan: TrainingPlan, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (a higher rate for the head) with a linear warm-up over 5% of ``steps``, then a
    linear decay to zero."""
    optimizer = torch.optim.AdamW(
        [
            {
                "params": [
                    p
                    for n, p in model.named_parameters()
                    if n.startswith("layers.") and p.requires_grad
                ],
                "lr": plan.learning_rate,
            },
            {"params": list(model.head.parameters()), "lr": plan.head_learning_rate},
        ],
        weight_decay=0.01,
    )
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup)))
    )
    return optimizer, scheduler


def _train_batch(
    model: PairEncoder,
    encoded: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    frozen: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> float:
    """One optimisation step on a batch of encoded pairs (the ``frozen`` lower layers run in
    eval mode without gradients; gradients clipped to norm 1); returns the batch loss."""
    ids, types, mask = encoded
    model.train()
    for layer in model.layers[:frozen]:
        layer.eval()
    with torch.no_grad():
        hidden = model.lower(ids, types, mask, upto=frozen)
    loss = _LOSS(model.upper(hidden, mask, start=frozen), labels)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def _save(model: PairEncoder, out: Path, plan: TrainingPlan) -> None:
    model.eval()
    save_weights(model, out, layers=plan.layers, trained=plan.trained, max_length=plan.max_length)
