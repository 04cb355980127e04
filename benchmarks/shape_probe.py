"""Can the learning proof's tiny InternViT (random init, 224-px tile) learn a region's SHAPE when told it directly?

The learning proof's captions name colour and position but not shape (docs/benchmarks.md). This separates "the
shape is not visible in the region's token" from "the caption path does not learn it": the ViT + pixel shuffle +
projector of configs/sa2va_learning_proof.py, and a linear 5-way head on the region's thumbnail tokens (the same
cells the LLM gets as visual-prompt tokens), trained on the shape word of the refcocog train regions with AdamW at
the config's learning rate; held-out accuracy on the val regions every 50 steps.

    python benchmarks/shape_probe.py --assets work_dirs/shape_probe_assets --images 2000 --steps 400
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

SHAPES = ("circle", "square", "triangle", "rectangle", "star")


def shape_label(tokenizer, item: dict) -> int:
    """The shape word of a region-caption item's answer."""
    answer = tokenizer.decode(item["input_ids"]).lower().split("assistant")[-1]
    return next(i for i, s in enumerate(SHAPES) if re.search(rf"\b{s}\b", answer))


def region_features(model, items: list[dict]) -> torch.Tensor:
    """Mean of each item's region tokens, as the LLM gets them (``visual_embeddings`` puts them after the tiles'
    tokens; one region per item): [B, D]."""
    from sa2va.datasets.collate import sa2va_collate_fn

    data = model.data_preprocessor(sa2va_collate_fn(items, model.tokenizer.pad_token_id or 0), False)["data"]
    visual, counts = model.mllm.visual_embeddings(data["pixel_values"], data["num_tiles"], data["prompt_masks"])
    visual = visual.split(counts.tolist())
    return torch.stack([v[-int(regions.sum()):].mean(0) for v, regions in zip(visual, data["prompt_masks"])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--assets", default="work_dirs/shape_probe_assets")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--val-items", type=int, default=256)
    args = p.parse_args()

    from learning_proof_sweep import _replace_prefix, variant_config
    from sa2va import BUILDER

    cfg = variant_config({})
    _replace_prefix(cfg._cfg_dict, cfg.prepare.root, args.assets)
    cfg.prepare.num_images = args.images
    BUILDER.build(cfg.prepare)
    torch.manual_seed(0)
    captions = cfg.train_dataloader.dataset.datasets[1]
    train, val = BUILDER.build(captions), BUILDER.build(dict(captions, split="val"))
    model = BUILDER.build(cfg.model)
    vision = model.mllm.hf_model.model
    head = torch.nn.Linear(vision.multi_modal_projector.linear_2.out_features, len(SHAPES))
    params = [*vision.vision_tower.parameters(), *vision.multi_modal_projector.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    val_items = [val[i] for i in range(min(len(val), args.val_items))]
    val_y = torch.tensor([shape_label(model.tokenizer, x) for x in val_items])
    chance = torch.bincount(val_y).max().item() / len(val_y)
    print(f"{len(train)} train / {len(val_items)} val regions; majority-class accuracy {chance:.3f}", flush=True)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        items = [train[i] for i in torch.randint(len(train), (args.batch,), generator=g).tolist()]
        y = torch.tensor([shape_label(model.tokenizer, x) for x in items])
        loss = F.cross_entropy(head(region_features(model, items)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            with torch.no_grad():
                acc = (head(region_features(model, val_items)).argmax(1) == val_y).float().mean().item()
            print(f"step {step}: train loss {loss.item():.3f}, held-out shape accuracy {acc:.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
