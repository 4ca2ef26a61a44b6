"""Diagnostics of a trained mask head's outputs (no I/O)."""

from __future__ import annotations

from typing import Any

import torch


def basis_correlation(bottom: Any) -> float:
    """Mean pairwise Pearson correlation between the K maps of ``bottom: Tensor[B, K, h, w]`` (bases, prototypes)
    over all their pixels; NaN when the bottom is not such a tensor or K < 2.

    Near 1, the K maps are one map: K acts as 1 (the failure a briefly trained shared-trunk BlendMask shows: its
    attention starts uniform, so every basis gets the same gradient, and identical bases give the attention none).
    """
    if not isinstance(bottom, torch.Tensor) or bottom.ndim != 4 or bottom.shape[1] < 2:
        return float("nan")
    maps = bottom.detach().double().transpose(0, 1).flatten(1)  # (K, B*h*w)
    maps = maps - maps.mean(dim=1, keepdim=True)
    maps = maps / maps.norm(dim=1, keepdim=True).clamp(min=1e-12)
    K = maps.shape[0]
    gram = maps @ maps.t()  # (K, K) correlations, ones on the diagonal
    return float((gram.sum() - gram.diagonal().sum()) / (K * K - K))
