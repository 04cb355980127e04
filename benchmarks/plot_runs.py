"""Learning-proof runs side by side: per-task loss windows and the teacher-forced cIoU, as a table and a PNG.

    python benchmarks/plot_runs.py OUT.png SWEEP_RUN_DIR [SWEEP_RUN_DIR ...] [--window 100]

Each run directory is one run of ``benchmarks/learning_proof_sweep.py`` (``losses.jsonl``, ``tf_eval.jsonl``).
A batch of the learning proof holds one task (length-grouped batches, one sample type per batch), so the losses
split by task: caption batches have no mask loss (``loss_mask == 0``), segmentation batches do. Printed per run:
the caption batches' LM loss per token and the segmentation batches' mask loss (sigmoid-CE + Dice, both weighted),
as means over ``--window``-iteration windows, and the teacher-forced cIoU points. Runs whose teacher-forced records
carry ``seg_state_colour`` / ``seg_state_shape`` (how well the [SEG] hidden states tell the named colours / shape
words apart) get a panel for each.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp


def read_jsonl(path: str) -> list[dict]:
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def task_windows(rows: list[dict], window: int) -> dict[str, list[tuple[int, float]]]:
    """{'caption': [(window end, mean LM loss)], 'segmentation': [(window end, mean mask + Dice loss)]}."""
    sums: dict[str, dict[int, list[float]]] = {"caption": {}, "segmentation": {}}
    for row in rows:
        end = ((row["iter"] - 1) // window + 1) * window
        if row["loss_mask"] == 0:
            sums["caption"].setdefault(end, []).append(row["llm_loss"])
        else:
            sums["segmentation"].setdefault(end, []).append(row["loss_mask"] + row["loss_dice"])
    return {task: [(end, sum(v) / len(v)) for end, v in sorted(by_end.items())] for task, by_end in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("png")
    p.add_argument("runs", nargs="+")
    p.add_argument("--window", type=int, default=100)
    args = p.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {osp.basename(osp.normpath(run)): (read_jsonl(osp.join(run, "losses.jsonl")),
                                               read_jsonl(osp.join(run, "tf_eval.jsonl"))) for run in args.runs}
    # the [SEG]-state separability panels that the teacher-forced records carry: (field, title)
    separability = [(field, title) for field, title in (
        ("seg_state_colour", "[SEG] states: named colour told apart (chance ~0.17)"),
        ("seg_state_shape", "[SEG] states: named shape told apart (chance ~0.2)"))
        if any(field in r for _, tf in runs.values() for r in tf)]
    fig, axes = plt.subplots(1, 3 + len(separability), figsize=(5 * (3 + len(separability)), 4))
    if len(runs) > 10:  # the default cycle repeats after 10 colours
        for ax in axes:
            ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for name, (losses, tf) in runs.items():
        windows = task_windows(losses, args.window)
        for task, values in windows.items():
            print(f"{name} {task}: " + " ".join(f"{end}:{v:.3f}" for end, v in values))
        print(f"{name} teacher-forced cIoU: " + " ".join(f"{r['iter']}:{r['cIoU']:.3f}" for r in tf))
        for ax, task in zip(axes, ("caption", "segmentation")):
            if windows[task]:
                ax.plot(*zip(*windows[task]), marker=".", label=name)
        if tf:
            axes[2].plot([r["iter"] for r in tf], [r["cIoU"] for r in tf], marker="o", label=name)
        for ax, (field, _) in zip(axes[3:], separability):
            points = [(r["iter"], r[field]) for r in tf if field in r]
            if points:
                print(f"{name} {field}: " + " ".join(f"{i}:{v:.2f}" for i, v in points))
                ax.plot(*zip(*points), marker="o", label=name)
    titles = (f"caption batches: LM loss per token ({args.window}-it means)",
              f"segmentation batches: mask + Dice loss ({args.window}-it means)", "held-out cIoU, teacher-forced",
              *(title for _, title in separability))
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
