"""Can the learning proof's tiny SAM2 pick out every colour, given a clean prompt? (issue 7, thirteenth session)

The learning proof's failed runs sit on a plateau where the [SEG] masks of some colours are right and those of the
others cover several shapes (teacher-forced ``by_colour`` records of benchmarks/learning_proof_sweep.py). This
probe takes the LLM out: the prompt is a learned embedding per colour word (one row per colour, initial norm ~7 like
the learning proof's ``prompt_init_gain=4`` prompts) fed to SAM2's mask decoder exactly as Sa2VA feeds a [SEG]
embedding (SAM2TrainRunner). Everything else is as in the learning proof: the tiny SAM2 from random init (Hiera
embed_dim 32, image encoder trained), single-mask output, up to 3 prompted objects per image, sigmoid-CE x50 + Dice
x12.5 (here on the full S/4 masks), AdamW lr 5e-4 with the mask decoder at x0.1, 100 warm-up iterations, cosine.

    python benchmarks/sam2_colour_probe.py --out probe.json --d-model 64 128 --seeds 0 1 2 --iters 1500

Per variant (SAM2 ``d_model``: the decoder width; its per-pixel mask embedding has d_model/8 channels) and seed it
reports the held-out cIoU and the share of objects segmented right (IoU >= 0.5) per colour, at a few iterations.
If every colour comes out right at d_model 64, the plateau is upstream of SAM2 (the [SEG] prompt); if colours stay
merged here too, the decoder's width is a suspect. Variants of one call run one after the other on one device.
``--merge-init red green blue purple`` starts those colours from one shared prompt, as a stuck run's merged [SEG]
prompts: does SAM2's loss alone pull them apart again, and how much later than from distinct prompts?
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects"))

from sa2va.datasets.masks import decode_segmentation  # noqa: E402
from sa2va.datasets.synthetic import COLOURS  # noqa: E402
from sa2va.datasets.synthetic import draw_scene as draw_synthetic_scene  # noqa: E402
from sa2va.evaluation import ReferSegMetric  # noqa: E402
from sa2va.models.losses import CrossEntropyLoss, DiceLoss  # noqa: E402
from sa2va.models.sam2_runner import SAM2TrainRunner  # noqa: E402
from sa2va.tiny_models import make_tiny_sam2  # noqa: E402

COLOUR_NAMES = list(COLOURS)


def draw_scene(task: tuple[int, int, int]) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Scene ``index`` of ``seed`` as the learning proof draws its images (640x480, 2-4 shapes of distinct colours),
    squashed to size x size (SAM2's DirectResize), with [(colour index, mask [size/4, size/4] bool)] per object."""
    from PIL import Image

    seed, index, size = task
    image, objs = draw_synthetic_scene(np.random.default_rng([seed, index]), dict(width=640, height=480, mode="RGB"))
    pixels = np.array(image.resize((size, size), Image.BICUBIC)).transpose(2, 0, 1)  # numpy: pickled by the pool
    masks = []
    for k, o in enumerate(objs):  # the polygons decoded as the datasets decode them (pycocotools)
        mask = decode_segmentation(o["polygons"], 480, 640, file=f"scene {seed}/{index}", record_id=k)
        masks.append((COLOUR_NAMES.index(o["colour"]),
                      np.array(Image.fromarray(mask).resize((size // 4, size // 4), Image.NEAREST)) > 0))
    return pixels, masks


def draw_set(n: int, seed: int, size: int, workers: int = 4):
    """n scenes: (images [n,3,size,size] uint8, per image its objects as :func:`draw_scene` returns them)."""
    tasks = [(seed, i, size) for i in range(n)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            scenes = pool.map(draw_scene, tasks, chunksize=16)
    else:
        scenes = [draw_scene(t) for t in tasks]
    images = torch.from_numpy(np.stack([s[0] for s in scenes]))
    return images, [[(c, torch.from_numpy(m)) for c, m in s[1]] for s in scenes]


class ColourPrompted(torch.nn.Module):
    """SAM2 prompted by a learned embedding per colour word."""

    def __init__(self, cfg_path: str, ckpt_path: str, d_model: int, prompt_norm: float = 7.0,
                 merged: tuple[str, ...] = ()):
        super().__init__()
        self.sam2 = SAM2TrainRunner(cfg_path, ckpt_path, freeze_image_encoder=False, multimask_output=False)
        self.prompts = torch.nn.Embedding(len(COLOUR_NAMES), d_model)
        torch.nn.init.normal_(self.prompts.weight, std=prompt_norm / math.sqrt(d_model))
        if merged:  # these colours start from one shared prompt (as a stuck run's merged [SEG] prompts)
            rows = [COLOUR_NAMES.index(c) for c in merged]
            with torch.no_grad():
                self.prompts.weight[rows] = self.prompts.weight[rows[0]].clone()

    def forward(self, images, colours, image_index):
        return self.sam2(images, self.prompts(colours), image_index)["masks"]  # [N, S/4, S/4] logits


def batch_of(images, objects, idx, per_image: int, rng: np.random.Generator, device):
    colours, masks, image_index = [], [], []
    for j, i in enumerate(idx):
        objs = objects[i]
        for k in rng.choice(len(objs), size=min(per_image, len(objs)), replace=False):
            colours.append(objs[k][0])
            masks.append(objs[k][1])
            image_index.append(j)
    return (images[idx].to(device), torch.tensor(colours, device=device), torch.tensor(image_index, device=device),
            torch.stack(masks).to(device))


@torch.no_grad()
def evaluate(model, images, objects, device, batch: int = 32) -> dict:
    """One object per held-out image (the first): cIoU and the share right (IoU >= 0.5) per colour."""
    model.eval()
    metric = ReferSegMetric()
    right, count = np.zeros(len(COLOUR_NAMES)), np.zeros(len(COLOUR_NAMES))
    for s in range(0, len(images), batch):
        idx = list(range(s, min(s + batch, len(images))))
        colours = torch.tensor([objects[i][0][0] for i in idx], device=device)
        gt = torch.stack([objects[i][0][1] for i in idx]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model(images[idx].to(device), colours, torch.arange(len(idx), device=device)) > 0
        for i, c, p, g in zip(idx, colours.tolist(), pred, gt):
            count[c] += 1
            right[c] += metric.add(p, g, key=i).iou >= 0.5
    model.train()
    return dict(cIoU=round(metric.compute()["cIoU"], 4),
                right_by_colour={n: round(right[c] / max(count[c], 1), 2) for c, n in enumerate(COLOUR_NAMES)})


def run(d_model: int, seed: int, args, train, val, device) -> dict:
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, ckpt = make_tiny_sam2(tmp, seed=0, image_size=args.size, embed_dim=args.embed_dim, d_model=d_model)
        model = ColourPrompted(str(cfg), str(ckpt), d_model, merged=tuple(args.merge_init)).to(device)
    decoder = [p for n, p in model.named_parameters() if "sam_mask_decoder" in n]
    rest = [p for n, p in model.named_parameters() if "sam_mask_decoder" not in n and p.requires_grad]
    opt = torch.optim.AdamW([dict(params=rest), dict(params=decoder, lr=args.lr * args.decoder_lr_mult)],
                            lr=args.lr, weight_decay=0.01)
    base = [g["lr"] for g in opt.param_groups]
    ce, dice = CrossEntropyLoss(loss_weight=50.0), DiceLoss(naive_dice=True, eps=1.0, loss_weight=12.5)
    rng = np.random.default_rng(seed)
    curve, t0 = [], time.perf_counter()
    for it in range(1, args.iters + 1):
        f = it / 100 if it <= 100 else 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (it - 100) / (args.iters - 100)))
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * f
        idx = rng.choice(len(train[0]), size=args.batch, replace=False).tolist()
        images, colours, image_index, gt = batch_of(*train, idx, 3, rng, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images, colours, image_index).float()
        loss = ce(logits.flatten(), gt.flatten().float()) + dice(logits.flatten(1), gt.flatten(1).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if it % args.eval_every == 0 or it == args.iters:
            row = dict(iter=it, loss=round(loss.item(), 3), s=round(time.perf_counter() - t0, 1),
                       **evaluate(model, *val, device))
            curve.append(row)
            print(json.dumps(dict(d_model=d_model, seed=seed, **row)), flush=True)
    return dict(d_model=d_model, seed=seed, curve=curve)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--d-model", type=int, nargs="+", default=[64, 128])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32, help="images per step (up to 3 prompted objects each)")
    p.add_argument("--size", type=int, default=512, help="SAM2 input side (the learning proof's: 512)")
    p.add_argument("--embed-dim", type=int, default=32, help="Hiera's first-stage width (the learning proof's: 32)")
    p.add_argument("--images", type=int, default=1600)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--decoder-lr-mult", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--merge-init", nargs="*", default=[], choices=COLOUR_NAMES,
                   help="colours whose prompts start identical (a stuck learning-proof run's merged colours)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train = draw_set(args.images, 1, args.size)
    val = draw_set(args.val_images, 2, args.size)
    results = [run(d, s, args, train, val, device) for d in args.d_model for s in args.seeds]
    with open(args.out, "w") as f:
        json.dump(dict(args=vars(args), device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       results=results), f, indent=1)


if __name__ == "__main__":
    main()
