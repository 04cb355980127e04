"""Mask losses and point sampling against hand-computed values."""
import math

import torch

from sa2va.models import CrossEntropyLoss, DiceLoss
from sa2va.models.point_sampling import point_sample, uncertain_point_coords_with_randomness

EPS32 = torch.finfo(torch.float32).eps


def _bce(x, t):
    return -(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-x))))


def test_sigmoid_ce_mean_and_avg_factor():
    pred = torch.tensor([0.0, 2.0, -1.0, 3.0])
    tgt = torch.tensor([1.0, 0.0, 0.0, 1.0])
    by_hand = [_bce(p, t) for p, t in zip(pred.tolist(), tgt.tolist())]
    ce = CrossEntropyLoss(use_sigmoid=True, loss_weight=2.0)
    assert math.isclose(ce(pred, tgt).item(), 2.0 * sum(by_hand) / 4, rel_tol=1e-6)
    # the model's avg factor: N*P + 1e-4 (+ float32 eps)
    assert math.isclose(ce(pred, tgt, avg_factor=4 + 1e-4).item(), 2.0 * sum(by_hand) / (4 + 1e-4 + EPS32),
                        rel_tol=1e-6)


def test_naive_dice_with_eps_and_avg_factor():
    pred = torch.tensor([[0.0, 0.0], [10.0, -10.0]])  # sigmoid -> [.5,.5], [~1, ~0]
    tgt = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = pred.sigmoid()
    d0 = 1 - (2 * (p[0] * tgt[0]).sum() + 1) / (p[0].sum() + tgt[0].sum() + 1)  # 1 - 2/3
    d1 = 1 - (2 * (p[1] * tgt[1]).sum() + 1) / (p[1].sum() + tgt[1].sum() + 1)
    assert math.isclose(d0.item(), 1 / 3, rel_tol=1e-6)
    dice = DiceLoss(use_sigmoid=True, activate=True, naive_dice=True, eps=1.0, loss_weight=0.5)
    assert math.isclose(dice(pred, tgt).item(), 0.5 * (d0 + d1).item() / 2, rel_tol=1e-6)
    assert math.isclose(dice(pred, tgt, avg_factor=2 + 1e-4).item(),
                        0.5 * (d0 + d1).item() / (2 + 1e-4 + EPS32), rel_tol=1e-6)


def test_model_mask_losses_full_map_and_fixed_points(tiny_models):
    from model_helpers import model_config
    from sa2va import BUILDER

    m = BUILDER.build(model_config(tiny_models, loss_sample_points=False))
    pred = torch.tensor([[[2.0, -2.0], [0.0, 1.0]]])  # [1,2,2]
    gt = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    lm, ld = m.mask_losses(pred, gt)
    bce = sum(_bce(p, t) for p, t in zip(pred.flatten().tolist(), gt.flatten().tolist())) / 4
    s = pred.sigmoid().flatten()
    dice = 1 - (2 * (s * gt.flatten()).sum() + 1) / (s.sum() + 2 + 1)
    assert math.isclose(lm.item(), 2.0 * bce, rel_tol=1e-6)
    assert math.isclose(ld.item(), 0.5 * dice.item(), rel_tol=1e-6)

    # with point sampling: fixed points -> the original's avg factors N*P+1e-4 and N+1e-4
    m.loss_sample_points = True
    fixed = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])  # pixel centres
    import sa2va.models.sa2va_model as mod
    orig = mod.uncertain_point_coords_with_randomness
    mod.uncertain_point_coords_with_randomness = lambda *a, **k: fixed
    try:
        lm_p, ld_p = m.mask_losses(pred, gt)
    finally:
        mod.uncertain_point_coords_with_randomness = orig
    assert math.isclose(lm_p.item(), 2.0 * bce * 4 / (4 + 1e-4 + EPS32), rel_tol=1e-5)
    assert math.isclose(ld_p.item(), 0.5 * dice.item() / (1 + 1e-4 + EPS32), rel_tol=1e-5)


def test_point_sample_is_bilinear_at_pixel_centres():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    coords = torch.tensor([[[1 / 6, 0.25], [5 / 6, 0.75], [0.5, 0.5]]])
    out = point_sample(x, coords)
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 5.0, 2.5]), atol=1e-6)


def test_uncertain_points_count_and_importance():
    torch.manual_seed(0)
    logits = torch.full((2, 1, 64, 64), 10.0)
    logits[:, :, :, :32] = 0.0  # left half maximally uncertain
    coords = uncertain_point_coords_with_randomness(logits, 12544, 3.0, 0.75)
    assert coords.shape == (2, 12544, 2)
    important, rand = coords[:, :9408], coords[:, 9408:]
    assert (important[..., 0] < 0.5).all()  # all 9408 from the uncertain half
    frac_left = (rand[..., 0] < 0.5).float().mean().item()  # the 3136 uniform ones: about half
    assert 0.4 < frac_left < 0.6
