"""Uncertainty-based point sampling for mask losses (PointRend / Mask2Former recipe).

Coordinates are normalised (x, y) in [0, 1]; sampling is bilinear with ``align_corners=False``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """inputs [N,C,H,W], coords [N,P,2] in [0,1] -> [N,C,P]."""
    grid = 2.0 * coords[:, :, None, :] - 1.0  # [N,P,1,2] in [-1,1]
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=False)[..., 0]


def uncertain_point_coords_with_randomness(logits: torch.Tensor, num_points: int, oversample_ratio: float,
                                           importance_sample_ratio: float) -> torch.Tensor:
    """Pick ``num_points`` coords per mask: the most uncertain (|logit| smallest) among
    ``num_points * oversample_ratio`` random candidates, plus uniformly random ones.

    logits: [N,1,H,W] -> coords [N,num_points,2]. 12544 / 3.0 / 0.75 gives 37632 candidates, of which the
    9408 most uncertain are kept, plus 3136 uniform points.
    """
    n = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_candidates, 2, device=logits.device)
    uncertainty = -point_sample(logits, candidates)[:, 0].abs()  # [N,num_candidates]
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = uncertainty.topk(num_uncertain, dim=1).indices  # [N,num_uncertain]
    coords = candidates.gather(1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=logits.device)], dim=1)
    return coords
