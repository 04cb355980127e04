"""Evaluate a Sa2VA model on RefCOCO / RefCOCO+ / RefCOCOg: referring segmentation (cIoU, gIoU) or region captions.

    python tools/test.py CONFIG CKPT --dataset refcoco --split val
    python tools/test.py CONFIG CKPT --dataset refcoco+ --all-splits
    python tools/test.py CONFIG CKPT --dataset refcocog --split val --task caption
    python tools/test.py --export-dir EXPORT --dataset refcoco --split testA --data-root data/ref_seg \\
        --img-dir data/coco2014/train2014
    torchrun --nproc_per_node 8 tools/test.py CONFIG CKPT --dataset refcoco --all-splits --launcher pytorch

CKPT is a training checkpoint (``iter_N.pth`` file or DeepSpeed directory). Data locations come from the config's
training data (see sa2va.evaluation.refer_data) or from --data-root / --img-dir. Images are sharded over the
processes and the per-sentence results merged, so any number of processes reports the same numbers.
Writes to --work-dir: ``<dataset>_<split>_<task>.json`` (metrics + per-sentence / per-region results),
``summary.json``, and overlays of the first --num-vis images in ``vis/<dataset>_<split>/``.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "projects"))  # run from a checkout

import torch  # noqa: E402
from mmengine import dist  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from sa2va.evaluation import EVAL_PROMPT, evaluate_refer, evaluate_region_captions  # noqa: E402
from sa2va.evaluation.caption_eval import CAPTION_QUESTION  # noqa: E402
from sa2va.evaluation.refer_eval import EVAL_MAX_NEW_TOKENS  # noqa: E402
from sa2va.evaluation.distributed import init_distributed  # noqa: E402
from sa2va.evaluation.refer_data import SPLITS, build_refer_eval_dataset, canonical_name, check_split  # noqa: E402
from sa2va.inference import Sa2VAPredictor  # noqa: E402
from sa2va.inference.visualize import draw_overlay  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="training config (omit with --export-dir)")
    p.add_argument("checkpoint", nargs="?", help="training checkpoint: iter_N.pth file or DeepSpeed directory")
    p.add_argument("--export-dir", help="an exported model directory instead of CONFIG CKPT")
    p.add_argument("--dataset", required=True, help="refcoco | refcoco+ | refcocog")
    p.add_argument("--split", help="val | testA | testB (RefCOCO/+) ; val | test (RefCOCOg)")
    p.add_argument("--all-splits", action="store_true", help="every evaluation split of the dataset")
    p.add_argument("--task", choices=["refer", "caption"], default="refer",
                   help="refer: referring segmentation (cIoU/gIoU); caption: region captions (METEOR, CIDEr, ...)")
    p.add_argument("--work-dir", help="output folder (default: work_dirs/test/<checkpoint or export name>)")
    p.add_argument("--data-root", help="folder with refcoco/, refcoco+/, refcocog/ (or the dataset folder itself)")
    p.add_argument("--img-dir", help="image folder (default: from the config, else <data-root>/coco2014/train2014)")
    p.add_argument("--max-items", type=int, help="only the first N images of each split (a quick check)")
    p.add_argument("--prompt", default=EVAL_PROMPT, help="refer question, with {sent} (default: %(default)r)")
    p.add_argument("--question", default=CAPTION_QUESTION, help="caption question about region1")
    p.add_argument("--max-new-tokens", type=int, default=EVAL_MAX_NEW_TOKENS,
                   help="longest answer (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts of one image decoded together")
    p.add_argument("--num-vis", type=int, default=4, help="images per split drawn to vis/ (default 4)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if bool(args.export_dir) == bool(args.config):
        p.error("give either CONFIG CKPT or --export-dir")
    if args.config and not args.checkpoint:
        p.error("CONFIG needs a CKPT (a training checkpoint)")
    try:
        args.dataset = canonical_name(args.dataset)
        if args.all_splits == bool(args.split):
            p.error("give either --split or --all-splits")
        if args.split:
            check_split(args.dataset, args.split)
    except ValueError as e:
        p.error(str(e))
    if args.export_dir and not args.data_root:
        p.error("--export-dir needs --data-root (there is no config to take the data layout from)")
    return args


def _log(msg: str) -> None:
    if dist.get_rank() == 0:
        print(msg, flush=True)


def build_predictor(args) -> tuple[Sa2VAPredictor, Config | None]:
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    kwargs = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    if args.export_dir:
        return Sa2VAPredictor.from_pretrained(args.export_dir, device=device, dtype=args.dtype, **kwargs), None
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    predictor = Sa2VAPredictor.from_config(cfg, args.checkpoint, device=device, dtype=args.dtype, **kwargs)
    return predictor, cfg


def _side_by_side(image: Image.Image, gt, pred, label: str, caption: str) -> Image.Image:
    left = draw_overlay(image, gt[None], ["GT"])
    right = draw_overlay(image, pred[None] if pred is not None else np.zeros((0, *gt.shape)), [label])
    both = Image.new("RGB", (left.width * 2, left.height))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    return draw_overlay(both, np.zeros((0, both.height, both.width)), caption=caption)


def refer_visualiser(out_dir: str, num_vis: int):
    def on_item(index, item, preds):
        if index >= num_vis:
            return
        os.makedirs(out_dir, exist_ok=True)
        for j, (text, pred) in enumerate(zip(item["texts"], preds)):
            mask = pred.masks[0] if pred.masks.shape[0] else None
            pic = _side_by_side(item["image"], item["masks"][j], mask, text, f"{text} -> {pred.text}")
            pic.save(osp.join(out_dir, f"{item['image_id']}_{j}.png"), compress_level=1)
    return on_item


def caption_visualiser(out_dir: str, num_vis: int):
    def on_item(index, item, regions, captions):
        if index >= num_vis:
            return
        os.makedirs(out_dir, exist_ok=True)
        for r, cap in zip(regions, captions):
            pic = draw_overlay(item["image"], r["mask"][None], ["region1"],
                               caption=f"pred: {cap} | ref: {r['references'][0]}")
            pic.save(osp.join(out_dir, f"{item['image_id']}_{r['ref_id']}.png"), compress_level=1)
    return on_item


def evaluate_split(args, predictor, cfg, split: str, work_dir: str) -> dict:
    dataset = build_refer_eval_dataset(args.dataset, split, predictor.tokenizer, cfg=cfg, data_root=args.data_root,
                                       img_dir=args.img_dir,
                                       sam2_size=predictor.model.grounding_encoder.image_size)
    vis_dir = osp.join(work_dir, "vis", f"{args.dataset}_{split}")
    start = time.time()
    if args.task == "refer":
        result = evaluate_refer(predictor, dataset, max_items=args.max_items, prompt=args.prompt,
                                return_sentences=True, on_item=refer_visualiser(vis_dir, args.num_vis))
        details = result.pop("sentences")
    else:
        result = evaluate_region_captions(predictor, dataset, max_items=args.max_items, question=args.question,
                                          return_captions=True, on_item=caption_visualiser(vis_dir, args.num_vis))
        details = result.pop("captions")
    result.update(dataset=args.dataset, split=split, task=args.task, seconds=round(time.time() - start, 1))
    if dist.get_rank() == 0:
        with open(osp.join(work_dir, f"{args.dataset}_{split}_{args.task}.json"), "w") as f:
            json.dump(dict(metrics=result, config=args.config, checkpoint=args.checkpoint or args.export_dir,
                           prompt=args.prompt if args.task == "refer" else args.question,
                           results=details), f, indent=1)
    return result


def _format(result: dict) -> str:
    if result["task"] == "refer":
        return (f"{result['dataset']:9s} {result['split']:6s} cIoU {result['cIoU']:.4f}  gIoU {result['gIoU']:.4f}  "
                f"no-[SEG] {result['n_no_seg']}/{result['n_sentences']} sentences  "
                f"(cIoU excl. no-[SEG] {result['cIoU_excl_no_seg']:.4f}; {result['n_images']} images)")
    scores = "  ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float) and k != "seconds")
    return f"{result['dataset']:9s} {result['split']:6s} {scores}  ({result['n_items']} regions)"


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    init_distributed(args.launcher)
    predictor, cfg = build_predictor(args)
    name = osp.splitext(osp.basename(osp.normpath(args.checkpoint or args.export_dir)))[0]
    work_dir = args.work_dir or osp.join("work_dirs", "test", name)
    os.makedirs(work_dir, exist_ok=True)
    splits = SPLITS[args.dataset] if args.all_splits else (args.split,)
    results = []
    for split in splits:
        result = evaluate_split(args, predictor, cfg, split, work_dir)
        _log(_format(result))
        results.append(result)
    if dist.get_rank() == 0:
        with open(osp.join(work_dir, "summary.json"), "w") as f:
            json.dump(results, f, indent=1)
    _log(f"results written to {work_dir}")
    return results


if __name__ == "__main__":
    main()
