"""The cross-encoder's bfloat16 inference path scores as its float32 model does, up to rounding,
padding included."""

from __future__ import annotations

import pytest
import torch

from rag.semantic.cross_encoder import FastPairEncoder, PairEncoder, native_bfloat16


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_path_matches_the_float32_model() -> None:
    torch.manual_seed(0)
    model = PairEncoder(layers=2).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)  # spread the scores over (0, 1), not all near 0.5
    lengths = [7, 19, 12, 19, 3]  # ragged: shorter pairs are padded to the longest
    ids = torch.randint(1000, 30000, (len(lengths), max(lengths)))
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    types = (torch.arange(max(lengths))[None, :] >= 4).long() * mask
    with torch.inference_mode():
        expected = torch.sigmoid(model(ids, types, mask))
        got = torch.sigmoid(FastPairEncoder(model)(ids, types, mask))
        # padding does not leak into a pair's score
        alone = torch.sigmoid(FastPairEncoder(model)(ids[:1, :7], types[:1, :7], mask[:1, :7]))
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert expected.max() - expected.min() > 0.5
    assert torch.allclose(got, expected, atol=0.02), (got, expected)
    assert torch.allclose(alone, got[:1], atol=0.01), (alone, got[:1])
