"""The model can learn: 50 steps on one fixed batch cut the total loss by at least half; the masks are fitted
too (the random tiny SAM2 first sits on the background prior, then breaks out: ~100 steps)."""
import pytest
import torch

from model_helpers import caption_sample, collate, model_config, seg_sample
from sa2va import BUILDER


@pytest.mark.slow
def test_fixed_batch_is_learned(tiny_models):
    torch.manual_seed(0)
    model = BUILDER.build(model_config(tiny_models, loss_sample_points=False))
    batch = collate([seg_sample(model, n_masks=2), caption_sample(model)], model.tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    history = []
    for _ in range(150):
        losses = model(batch, mode="loss")
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()} | {"total": total.item()})
    first, step50, last = history[0], history[49], history[-1]
    assert step50["total"] < 0.5 * first["total"], (first, step50)
    assert step50["llm_loss"] < 0.5 * first["llm_loss"] and step50["loss_mask"] < first["loss_mask"]
    assert last["loss_mask"] < 0.2 * first["loss_mask"], (first, last)
    assert last["loss_dice"] < 0.5 * first["loss_dice"], (first, last)
