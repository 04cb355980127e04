#!/usr/bin/env python
"""Write the synthetic data sets (REFER refcoco/refcocog, Osprey-style json, custom json) under OUT_DIR.

    python tools/make_synthetic_data.py data/synthetic --seed 0 --num-images 24

See ``sa2va.datasets.synthetic`` for the layout. The output is a pure function of --seed and --num-images.
"""
from __future__ import annotations

import argparse
import json

from sa2va.datasets.synthetic import make_synthetic_data


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--num-images", type=int, default=24, help="number of images (default 24, at least 6)")
    args = parser.parse_args(argv)
    paths = make_synthetic_data(args.out_dir, seed=args.seed, num_images=args.num_images)
    print(json.dumps(paths, indent=2))
    return paths


if __name__ == "__main__":
    main()
