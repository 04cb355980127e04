"""Run a Sa2VA model on one image: text -> answer + masks, or region masks -> captions. Writes an overlay PNG.

    python tools/infer.py --config CONFIG --checkpoint CKPT --image IMG --text "Please segment the red circle."
    python tools/infer.py --export-dir EXPORT --image IMG --text "Describe the image with [SEG] for each object."
    python tools/infer.py --export-dir EXPORT --image IMG --mask region.png [--mask other.png]
    python tools/infer.py --export-dir EXPORT --image IMG --polygon "10,10,200,10,200,150,10,150" [--question "..."]

Prints the answer (or one caption per region) and writes the overlay to --out (default: <image name>_sa2va.png):
predicted masks labelled with their <p> phrase (else the question), or the input regions labelled with captions.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "projects"))  # run from a checkout

from sa2va.datasets.masks import decode_segmentation  # noqa: E402
from sa2va.datasets.text import remove_image_placeholder  # noqa: E402
from sa2va.inference import Sa2VAPredictor, as_pil_image  # noqa: E402
from sa2va.inference.visualize import draw_overlay  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="training config (with --checkpoint)")
    p.add_argument("--checkpoint", help="training checkpoint: iter_N.pth file or DeepSpeed directory")
    p.add_argument("--export-dir", help="exported model directory (instead of --config/--checkpoint)")
    p.add_argument("--image", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="the question / instruction")
    what.add_argument("--mask", action="append", help="a region mask PNG of the image's size (repeatable)")
    what.add_argument("--polygon", action="append", help='a region polygon "x1,y1,x2,y2,..." (repeatable)')
    p.add_argument("--question", default=None, help="caption question about region1 (default: the RefCOCOg one)")
    p.add_argument("--out", help="overlay PNG (default: <image name>_sa2va.png in the working directory)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="default: bf16 on GPU, fp32 on CPU")
    args = p.parse_args(argv)
    if bool(args.export_dir) == bool(args.config):
        p.error("give either --export-dir or --config with --checkpoint")
    if args.config and not args.checkpoint:
        p.error("--config needs --checkpoint")
    return args


def read_regions(args, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [R, H, W]`` region masks from --mask files or --polygon strings."""
    width, height = size
    regions = []
    for path in args.mask or []:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L")) > 0
        if m.shape != (height, width):
            raise SystemExit(f"--mask {path}: {m.shape[1]}x{m.shape[0]} but the image is {width}x{height}")
        if not m.any():
            raise SystemExit(f"--mask {path}: empty mask")
        regions.append(m.astype(np.uint8))
    for k, text in enumerate(args.polygon or []):
        try:
            coords = [float(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise SystemExit(f"--polygon {text!r}: expected numbers 'x1,y1,x2,y2,...'") from None
        regions.append(decode_segmentation([coords], height, width, file="--polygon", record_id=k + 1))
    return np.stack(regions)


def main(argv=None):
    args = parse_args(argv)
    kwargs = dict(device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens)
    predictor = (Sa2VAPredictor.from_pretrained(args.export_dir, **kwargs) if args.export_dir
                 else Sa2VAPredictor.from_config(args.config, args.checkpoint, **kwargs))
    image = as_pil_image(args.image)
    out = args.out or osp.splitext(osp.basename(args.image))[0] + "_sa2va.png"
    if args.text is not None:
        pred = predictor.predict(image, args.text)
        question = remove_image_placeholder(args.text)
        labels = [phrase or question for phrase in pred.phrases]
        draw_overlay(image, pred.masks, labels, caption=pred.text).save(out)
        print(pred.text)
        print(f"{pred.masks.shape[0]} mask(s); overlay written to {out}")
        return pred
    regions = read_regions(args, image.size)
    captions = predictor.caption(image, regions, question=args.question)
    draw_overlay(image, regions, [f"region {k + 1}" for k in range(len(captions))],
                 caption=" | ".join(f"{k + 1}: {c}" for k, c in enumerate(captions))).save(out)
    for k, c in enumerate(captions):
        print(f"region {k + 1}: {c}")
    print(f"overlay written to {out}")
    return captions


if __name__ == "__main__":
    main()
