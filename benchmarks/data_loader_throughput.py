#!/usr/bin/env python
"""RefCOCO loader throughput on CPU: samples/s of ``ReferSegmDataset`` per worker, real image sizes.

    python benchmarks/data_loader_throughput.py [--items 200] [--workers 0] [--tokenizer DIR]

Writes synthetic REFER data (``sa2va.datasets.synthetic``), keeps the 640x480 JPEG images (RefCOCO's typical
COCO size: 12 tiles + thumbnail = 13 x 448 px tiles = 3328 image tokens), and reads items with real settings:
448-px tiles, up to 12 tiles + thumbnail, SAM2 input 1024x1024, 5 refs per sample, qwen_chat template.
``--uint8-tiles`` leaves the tiles as uint8 pixels (what the shipped configs do); ``--resize-backend torch`` resizes
with torch's uint8 bicubic kernel instead of PIL. ``--workers 0`` times
``dataset[i]`` in this process (= one DataLoader worker's rate); ``--workers N`` also times a DataLoader with N
workers and the real collate function. A per-stage breakdown of one item is printed too.
The tokenizer defaults to the tiny test tokenizer (a real one gives nearly the same time: the sequence is
~95 % ``<IMG_CONTEXT>`` special tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch


def _time(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200, help="items to read (default 200)")
    parser.add_argument("--num-images", type=int, default=48, help="synthetic images to write (default 48)")
    parser.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    parser.add_argument("--tokenizer", default=None, help="an InternVL checkpoint dir (default: tiny tokenizer)")
    parser.add_argument("--tile-size", type=int, default=448)
    parser.add_argument("--sam2-size", type=int, default=1024)
    parser.add_argument("--max-dynamic-patch", type=int, default=12)
    parser.add_argument("--uint8-tiles", action="store_true",
                        help="tiles as uint8 pixels (the configs' uint8_tiles=True; the model normalises them)")
    parser.add_argument("--resize-backend", choices=("pil", "torch"), default="pil",
                        help="resizes of the tiles and the SAM2 image: PIL (the original) or torch's uint8 bicubic")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one DataLoader worker = one thread of compute

    from sa2va.datasets.base import load_image
    from sa2va.datasets.collate import sa2va_collate_fn
    from sa2va.datasets.image_processing import DirectResize
    from sa2va.datasets.masks import decode_segmentation
    from sa2va.datasets.refer import ReferSegmDataset
    from sa2va.datasets.synthetic import make_synthetic_data
    from sa2va.tiny_models import make_tiny_internvl
    from sa2va.tokenizer import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_synthetic_data(os.path.join(tmp, "data"), seed=0, num_images=args.num_images)
        tok_dir = args.tokenizer or str(make_tiny_internvl(os.path.join(tmp, "tiny")))
        ds = ReferSegmDataset(paths["refcoco"], data_prefix=dict(img_path=paths["image_dir"]),
                              tokenizer=build_tokenizer(tok_dir), template="qwen_chat", max_length=8192,
                              tile_size=args.tile_size, max_dynamic_patch=args.max_dynamic_patch,
                              extra_image_processor=dict(type=DirectResize, target_length=args.sam2_size,
                                                         resize_backend=args.resize_backend), seed=0,
                              uint8_tiles=args.uint8_tiles, resize_backend=args.resize_backend)
        # benchmark only 640x480 JPEGs (a subset of the synthetic records)
        ds.records = [r for r in ds.records if (r["width"], r["height"]) == (640, 480)
                      and r["file_name"].endswith(".jpg")]
        n = len(ds.records)
        for i in range(min(5, n)):  # warm-up (processor construction, caches)
            ds[i]

        start = time.perf_counter()
        items = [ds[i % n] for i in range(args.items)]
        per_worker = args.items / (time.perf_counter() - start)

        item = items[0]
        rec = ds.records[0]
        image_path = os.path.join(ds.image_dir, rec["file_name"])
        image = load_image(image_path, file="-", record_id=0)
        stages = {
            "load_jpeg": _time(lambda: load_image(image_path, file="-", record_id=0), 20),
            "tiles": _time(lambda: ds.tile_processor(image), 10),
            "sam2_resize": _time(lambda: ds.builder.sam2_image(image), 10),
            "decode_masks": _time(lambda: [decode_segmentation(ds.segmentations[r["ann_id"]], 480, 640, file="-",
                                                               record_id=0) for r in rec["refs"]], 20),
            "encode_text": _time(lambda: ds.builder.encode([dict(input="<img>" + "<IMG_CONTEXT>" * 3328 + "</img>\nq",
                                                                 output="Sure, [SEG].")] * 1, file="-",
                                                           record_id=0), 20),
        }
        result = dict(
            date=time.strftime("%Y-%m-%d"), cpu=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), records_640x480=n,
            items=args.items, uint8_tiles=args.uint8_tiles, resize_backend=args.resize_backend,
            samples_per_s_per_worker=round(per_worker, 2),
            tiles=int(item["pixel_values"].shape[0]), tokens=int(item["length"]),
            masks_per_item=float(np.mean([len(x["masks"]) for x in items])),
            stage_ms={k: round(v * 1e3, 2) for k, v in stages.items()},
        )
        if args.workers > 0:
            from torch.utils.data import DataLoader

            loader = DataLoader(torch.utils.data.Subset(ds, [i % n for i in range(args.items)]), batch_size=2,
                                num_workers=args.workers, collate_fn=sa2va_collate_fn)
            start = time.perf_counter()
            count = sum(len(b["data"]["num_tiles"]) for b in loader)
            result[f"samples_per_s_{args.workers}_workers"] = round(count / (time.perf_counter() - start), 2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
