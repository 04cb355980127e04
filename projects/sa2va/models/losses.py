"""Mask losses with the config vocabulary of the original (mmdet-style arguments).

Reduction follows mmdet's ``weight_reduce_loss``: with ``avg_factor`` the summed loss is divided by
``avg_factor + eps`` (eps = float32 machine epsilon); without it, ``reduction`` applies.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_EPS = torch.finfo(torch.float32).eps


def reduce_loss(loss: torch.Tensor, reduction: str = "mean", avg_factor: float | None = None) -> torch.Tensor:
    if avg_factor is not None:
        if reduction != "mean":
            raise ValueError("avg_factor can only be used with reduction='mean'")
        return loss.sum() / (avg_factor + _EPS)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction '{reduction}'")


class CrossEntropyLoss(nn.Module):
    """Binary (sigmoid) cross entropy on mask logits. ``use_sigmoid=False`` gives softmax CE on class logits."""

    def __init__(self, use_sigmoid: bool = True, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.use_sigmoid = use_sigmoid
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, avg_factor: float | None = None) -> torch.Tensor:
        if self.use_sigmoid:
            loss = F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="none")
        else:
            loss = F.cross_entropy(pred, target.long(), reduction="none")
        return self.loss_weight * reduce_loss(loss, self.reduction, avg_factor)


class DiceLoss(nn.Module):
    """Dice loss per mask. pred/target: [N, ...] (flattened per mask).

    naive_dice=True:  1 - (2 * sum(p*t) + eps) / (sum(p) + sum(t) + eps)     (Sa2VA's setting, eps=1)
    naive_dice=False: 1 - (2 * sum(p*t)) / (sum(p^2) + eps + sum(t^2) + eps)  (V-Net form)
    """

    def __init__(self, use_sigmoid: bool = True, activate: bool = True, reduction: str = "mean",
                 naive_dice: bool = False, eps: float = 1e-3, loss_weight: float = 1.0):
        super().__init__()
        self.use_sigmoid = use_sigmoid
        self.activate = activate
        self.reduction = reduction
        self.naive_dice = naive_dice
        self.eps = eps
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, avg_factor: float | None = None) -> torch.Tensor:
        if self.activate:
            pred = pred.sigmoid() if self.use_sigmoid else pred.softmax(dim=1)
        p = pred.flatten(1)
        t = target.flatten(1).to(p.dtype)
        inter = (p * t).sum(1)
        if self.naive_dice:
            dice = (2 * inter + self.eps) / (p.sum(1) + t.sum(1) + self.eps)
        else:
            dice = 2 * inter / ((p * p).sum(1) + self.eps + (t * t).sum(1) + self.eps)
        return self.loss_weight * reduce_loss(1 - dice, self.reduction, avg_factor)
