"""Train a Sa2VA model from a config.

    python tools/train.py configs/sa2va_refcoco_only.py
    python tools/train.py CONFIG --deepspeed zero2 --launcher pytorch   (through tools/dist.sh)
    python tools/train.py CONFIG --resume auto
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, DictAction

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "projects"))  # run from a checkout

from sa2va.engine import build_runner, prepare_config  # noqa: E402
from sa2va.registry import BUILDER  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a Sa2VA model")
    p.add_argument("config", help="config file")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="'auto' (newest complete checkpoint in the work dir) or a checkpoint path")
    p.add_argument("--deepspeed", help="zero2 | zero3 | a DeepSpeed json file")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config entries: key=value")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get("prepare") is not None:  # assets a config needs, made on first use (the demo's tiny models/data)
        BUILDER.build(cfg.prepare)
    cfg, flexible = prepare_config(cfg, work_dir=args.work_dir, resume=args.resume, deepspeed=args.deepspeed,
                                   launcher=args.launcher, seed=args.seed, config_path=args.config)
    runner = build_runner(cfg, flexible)
    runner.train()


if __name__ == "__main__":
    main()
