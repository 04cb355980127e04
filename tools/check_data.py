#!/usr/bin/env python
"""Read every record of a config's training data once and report what a training run would meet.

    python tools/check_data.py CONFIG [--cfg-options KEY=VALUE ...] [--workers N] [--limit N]

Builds each dataset of ``train_dataloader.dataset`` (the datasets of a ConcatDataset one by one, or the single
dataset), reads every record (``dataset[i]`` for each distinct record, repeats not re-read), and prints per
dataset: records, images missing, records skipped and why, token lengths (p50/p90/p99/max), tiles, masks and
regions per sample, truncations. Exit code 0 when everything was read; 1 when any dataset failed to build or any
record raised (each such record is listed with file, record id and field); 2 for a bad command line.

Skipped records are those a dataset with ``skip_bad_records=True`` left out (``dataset.skip_counts``); with the
default ``skip_bad_records=False`` the same problems are hard errors. ``--workers`` reads with a DataLoader.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping

import numpy as np
from mmengine.config import Config, DictAction
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sa2va.datasets import ConcatDataset, dataset_name
from sa2va.registry import BUILDER


def _is_concat(cfg: Mapping) -> bool:
    kind = cfg.get("type")
    return kind == "ConcatDataset" or (isinstance(kind, type) and issubclass(kind, ConcatDataset))


class _Probe(Dataset):
    """``probe[i]`` reads record ``i`` of ``dataset`` and returns small statistics instead of tensors.

    Runs in DataLoader workers too: the dataset's counters are per process, so each read reports its own
    increments of ``skip_counts`` / ``truncations``.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return int(getattr(self.dataset, "num_records", len(self.dataset)))

    def __getitem__(self, index: int) -> dict:
        ds = self.dataset
        skips_before = Counter(getattr(ds, "skip_counts", Counter()))
        truncs_before = Counter(getattr(ds, "truncations", Counter()))
        stats = dict(index=index, error=None, reason=None)
        try:
            item = ds[index]
            masks, prompt_masks, tiles = item.get("masks"), item.get("prompt_masks"), item.get("pixel_values")
            stats.update(tokens=int(item["input_ids"].numel()),
                         masks=None if masks is None else int(masks.shape[0]),
                         regions=None if prompt_masks is None else int(prompt_masks.shape[0]),
                         tiles=0 if tiles is None else int(tiles.shape[0]))
        except Exception as e:  # noqa: BLE001 - every failure is reported, whatever its type
            stats["error"] = f"{dataset_name(ds)}[{index}]: {type(e).__name__}: {e}"
            stats["reason"] = getattr(e, "reason", type(e).__name__)
        stats["skips"] = Counter(getattr(ds, "skip_counts", Counter())) - skips_before
        stats["truncations"] = Counter(getattr(ds, "truncations", Counter())) - truncs_before
        return stats


def _first(batch: list):
    return batch[0]


def check_dataset(dataset, workers: int = 0, limit: int | None = None) -> dict:
    """Read the records of one dataset; returns the report's numbers and the hard errors."""
    probe = _Probe(dataset)
    n = len(probe) if limit is None else min(limit, len(probe))
    load_skips = Counter(getattr(dataset, "skip_counts", Counter()))  # records left out while loading annotations
    loader = DataLoader(probe, batch_size=1, num_workers=workers, collate_fn=_first,
                        sampler=range(n))
    report = dict(name=dataset_name(dataset), kind=type(dataset).__name__, records=len(probe), read=n,
                  errors=[], error_reasons=Counter(), skips=load_skips, truncations=Counter(),
                  tokens=[], read_indices=[], tiles=[], masks=[], regions=[], estimate_error=None)
    for stats in tqdm(loader, total=n, desc=report["name"], file=sys.stderr, dynamic_ncols=True):
        report["skips"] += stats["skips"]
        report["truncations"] += stats["truncations"]
        if stats["error"] is not None:
            report["errors"].append(stats["error"])
            report["error_reasons"][stats["reason"]] += 1
            continue
        report["tokens"].append(stats["tokens"])
        report["read_indices"].append(stats["index"])
        report["tiles"].append(stats["tiles"])
        for key in ("masks", "regions"):
            if stats[key] is not None:
                report[key].append(stats[key])
    lengths = getattr(dataset, "lengths", None)  # the sampler's estimates, sign = modality
    if lengths is not None and report["tokens"]:
        estimates = np.abs(np.asarray(lengths)[report["read_indices"]])
        report["estimate_error"] = np.abs(estimates - report["tokens"]) / np.asarray(report["tokens"])
    return report


def _counts(values: list[int]) -> str:
    if not values:
        return "-"
    return f"mean {np.mean(values):.2f}, min {min(values)}, max {max(values)}"


def format_report(report: dict, max_length: int | None = None) -> str:
    tokens = np.asarray(report["tokens"])
    if tokens.size:
        p50, p90, p99 = np.percentile(tokens, [50, 90, 99])
        lengths = f"{p50:.0f} / {p90:.0f} / {p99:.0f} / {tokens.max()}"
    else:
        lengths = "-"
    skips = report["skips"]
    trunc = report["truncations"]
    rows = [
        ("records", f"{report['records']}" + (f" (read {report['read']})" if report["read"] != report["records"]
                                              else "")),
        ("hard errors", str(len(report["errors"])) + (f"  {dict(report['error_reasons'])}"
                                                      if report["error_reasons"] else "")),
        ("images missing", str(skips.get("missing_image", 0) + report["error_reasons"].get("missing_image", 0))),
        ("skipped", str(sum(skips.values())) + (f"  {dict(skips)}" if skips else "")),
        ("tokens p50/p90/p99/max", lengths + (f"  (max_length {max_length})" if max_length else "")),
        ("sampler length estimate", "-" if report["estimate_error"] is None else
         f"error median {100 * np.median(report['estimate_error']):.0f}%, "
         f"max {100 * np.max(report['estimate_error']):.0f}%"),
        ("tiles per sample", _counts(report["tiles"])),
        ("masks per sample", _counts(report["masks"])),
        ("regions per sample", _counts(report["regions"])),
        ("truncated samples", f"{trunc.get('samples', 0)} (turns dropped {trunc.get('turns', 0)}, "
                              f"masks dropped {trunc.get('masks', 0)})"),
    ]
    width = max(len(k) for k, _ in rows)
    title = f"== {report['name']} ({report['kind']}) =="
    return "\n".join([title] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training config file")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config entries, e.g. train_dataloader.dataset.datasets.0.repeats=1")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for reading (default 0)")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many records per dataset")
    parser.add_argument("--max-errors", type=int, default=50, help="hard errors listed per dataset (default 50)")
    args = parser.parse_args(argv)

    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    dataset_cfg = cfg.get("train_dataloader", {}).get("dataset")
    if not isinstance(dataset_cfg, Mapping):
        print(f"{args.config}: no train_dataloader.dataset config", file=sys.stderr)
        return 2
    child_cfgs = list(dataset_cfg["datasets"]) if _is_concat(dataset_cfg) else [dataset_cfg]

    failed = False
    built = []
    for k, child in enumerate(child_cfgs):
        try:
            built.append(BUILDER.build(child) if isinstance(child, Mapping) else child)
        except Exception as e:  # noqa: BLE001
            failed = True
            kind = child.get("type") if isinstance(child, Mapping) else type(child)
            print(f"\n== dataset {k} ({getattr(kind, '__name__', kind)}) ==\n  BUILD FAILED: {type(e).__name__}: {e}")

    for dataset in built:
        report = check_dataset(dataset, workers=args.workers, limit=args.limit)
        print("\n" + format_report(report, getattr(dataset, "max_length", None)))
        for line in report["errors"][:args.max_errors]:
            print(f"  ERROR {line}")
        if len(report["errors"]) > args.max_errors:
            print(f"  ... and {len(report['errors']) - args.max_errors} more errors")
        failed |= bool(report["errors"])

    if len(built) > 1 and len(built) == len(child_cfgs):
        print("\n== epoch composition ==\n" + ConcatDataset(built).summary_table())
    print("\nFAILED: see the errors above" if failed else "\nOK: every record was read")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
