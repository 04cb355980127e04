"""Export a trained Sa2VA model to one self-contained directory (LoRA merged; no training config or remote code
needed to load it).

    python tools/convert_to_hf.py CONFIG CKPT --save-path DIR [--dtype bf16|fp32] [--max-shard-size 5GB]

CONFIG: the training config; CKPT: a training checkpoint (``work_dirs/<cfg>/iter_N.pth``: a file, or a DeepSpeed
directory). Load the result with ``sa2va.hf.load_pretrained_sa2va(DIR)``. Formats: docs/checkpoints.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "projects"))  # run from a checkout

from sa2va.hf.export import DEFAULT_MAX_SHARD_SIZE, export_from_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Export a trained Sa2VA model (LoRA merged) to a directory")
    p.add_argument("config", help="the training config file")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="training checkpoint (iter_N.pth file or DeepSpeed directory); omit to export the config's "
                        "model as built (e.g. its pretrained_pth)")
    p.add_argument("--save-path", required=True, help="output directory")
    p.add_argument("--dtype", choices=["bf16", "fp32", "fp16"], default="bf16",
                   help="dtype of the InternVL weights (SAM2 stays fp32); default bf16")
    p.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="safetensors shard size (default 5GB)")
    p.add_argument("--template", default=None, help="prompt template name to record (default: the config's)")
    p.add_argument("--max-tiles", type=int, default=None,
                   help="max image tiles to record (default: the config's or 12)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    export_from_config(args.config, args.checkpoint, args.save_path, dtype=args.dtype,
                       max_shard_size=args.max_shard_size, template=args.template, max_tiles=args.max_tiles)


if __name__ == "__main__":
    main()
