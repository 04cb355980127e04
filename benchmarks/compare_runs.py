"""Summarise the runs of benchmarks/gpu_multi.sh in one compact table.

    python benchmarks/compare_runs.py OUT [--json OUT/summary.json]

Reads ``OUT/runs.tsv`` (one row per run: name, processes, accumulation, iterations, exit status, seconds, work dir),
the runs' ``losses.jsonl`` (LossCurveHook: per iteration, the mean over ranks plus ``per_rank``),
``vis_data/scalars.json`` (ThroughputHook's samples_per_s), ``OUT/kill.json`` and the logs, and prints:

1. parity: per optimizer step, the global-batch loss of the 1-process run (mean over its accumulation window) vs
   the multi-process run (mean over its ranks and window): |difference| at step 1, max, mean, max relative; and per
   micro-batch (rank r of the multi-process run <-> accumulation step r of the 1-process run, which is what
   ``rank_split='contiguous'`` guarantees);
2. iterations where some ranks had masks and others none, and whether those runs finished;
3. kill + resume: whether the kill came before the end, where the run resumed, and the per-iteration differences
   to the uninterrupted run after the resume point (and, as the run-to-run noise floor, before the kill);
4. samples/s per run (median over the iterations after the first ``--warmup``) and the speed-up.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os.path as osp
import re
import statistics
import sys

TERMS = ("loss", "llm_loss", "loss_mask", "loss_dice")


def read_rows(path: str) -> tuple[list[dict], int]:
    """Rows of a losses.jsonl in file order, and the number of unreadable lines (a line cut by a kill)."""
    rows, bad = [], 0
    if not osp.isfile(path):
        return rows, bad
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                int(row["iter"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            rows.append(row)
    return rows, bad


def segments(rows: list[dict]) -> list[list[dict]]:
    """Split where the iteration number does not increase: one segment per process lifetime (run, resumed run)."""
    out: list[list[dict]] = []
    for row in rows:
        if not out or row["iter"] <= out[-1][-1]["iter"]:
            out.append([])
        out[-1].append(row)
    return out


def by_iter(rows: list[dict]) -> dict[int, dict]:
    return {r["iter"]: r for r in rows}


def diff_stats(a: list[float], b: list[float]) -> dict:
    d = [abs(x - y) for x, y in zip(a, b)]
    if not d:
        return {"n": 0}
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b) if not (x == 0.0 and y == 0.0)]
    return {"n": len(d), "first": d[0], "max": max(d), "argmax": d.index(max(d)), "mean": sum(d) / len(d),
            "max_rel": max(rel) if rel else 0.0, "identical": sum(x == y for x, y in zip(a, b))}


def step_means(rows: dict[int, dict], accum: int, steps: int, term: str) -> list[float] | None:
    """Per optimizer step: the mean of ``term`` over the step's ``accum`` iterations (None if one is missing)."""
    out = []
    for s in range(steps):
        window = [rows.get(s * accum + j + 1, {}).get(term) for j in range(accum)]
        if any(v is None for v in window):
            return out or None
        out.append(sum(window) / accum)
    return out


def micro_batch_pairs(one: dict[int, dict], many: dict[int, dict], a_one: int, a_many: int, nproc: int,
                      steps: int, term: str) -> tuple[list[float], list[float]]:
    """(1-process values, multi-process values) per micro-batch: rank r, accumulation step j of the multi-process
    run <-> accumulation step r * a_many + j of the 1-process run (``rank_split='contiguous'``)."""
    xs, ys = [], []
    for s in range(steps):
        for j in range(a_many):
            row = many.get(s * a_many + j + 1)
            per_rank = (row or {}).get("per_rank", {}).get(term)
            if per_rank is None:
                continue
            for r in range(nproc):
                ref = one.get(s * a_one + r * a_many + j + 1, {}).get(term)
                if ref is not None and per_rank[r] is not None:
                    xs.append(ref)
                    ys.append(per_rank[r])
    return xs, ys


def fmt(x, digits=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.{digits}e}" if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4) else f"{x:.{digits + 1}g}"
    return str(x)


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def read_runs(out: str) -> dict[str, dict]:
    runs = {}
    path = osp.join(out, "runs.tsv")
    if not osp.isfile(path):
        sys.exit(f"compare_runs: {path} not found (written by benchmarks/gpu_multi.sh)")
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            for k in ("procs", "accum", "iters", "rc", "wall_s"):
                r[k] = int(r[k])
            runs[r["name"]] = r
    return runs


def scalars(work_dir: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, "*", "vis_data", "scalars.json"))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def run_rows(runs: dict[str, dict], name: str) -> list[dict]:
    """The losses.jsonl rows a run wrote: runs sharing a work dir (killed run, resumed run) append to one file, one
    segment each, in the order of runs.tsv."""
    run = runs[name]
    rows, _ = read_rows(osp.join(run["work_dir"], "losses.jsonl"))
    same_dir = [n for n, r in runs.items() if r["work_dir"] == run["work_dir"]]
    if len(same_dir) == 1:
        return rows
    segs = segments(rows)
    k = same_dir.index(name)
    return segs[k] if k < len(segs) else []


def finished(runs: dict[str, dict], name: str) -> bool:
    rows = run_rows(runs, name)
    return runs[name]["rc"] == 0 and bool(rows) and rows[-1]["iter"] == runs[name]["iters"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the OUT directory of benchmarks/gpu_multi.sh")
    p.add_argument("--one", default="par1", help="1-process parity run")
    p.add_argument("--many", default="par2", help="multi-process parity run")
    p.add_argument("--ref", default="ref2", help="uninterrupted multi-process run")
    p.add_argument("--killed", default="kill2", help="the killed run (its resumed run: --resumed)")
    p.add_argument("--resumed", default="resume2")
    p.add_argument("--warmup", type=int, default=5, help="iterations left out of the samples/s median")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    runs = read_runs(args.out)
    summary: dict = {"runs": runs}
    lines = []

    def section(title):
        lines.extend(["", f"== {title}"])

    section("runs")
    lines.append(table(["run", "procs", "accum", "iters", "rc", "wall_s", "first iter", "last iter", "finished"], [
        [n, r["procs"], r["accum"], r["iters"], r["rc"], r["wall_s"], (run_rows(runs, n) or [{}])[0].get("iter"),
         (run_rows(runs, n) or [{}])[-1].get("iter"), finished(runs, n)] for n, r in runs.items()]))

    # 1. parity
    one, many = runs.get(args.one), runs.get(args.many)
    if one and many:
        r1, _ = read_rows(osp.join(one["work_dir"], "losses.jsonl"))
        rn, _ = read_rows(osp.join(many["work_dir"], "losses.jsonl"))
        r1, rn = by_iter(r1), by_iter(rn)
        steps = min(one["iters"] // one["accum"], many["iters"] // many["accum"])
        section(f"1. parity: {one['procs']} process x accum {one['accum']} ({args.one}) vs {many['procs']} processes"
                f" x accum {many['accum']} ({args.many}), global-batch loss per optimizer step ({steps} steps)")
        rows, parity = [], {}
        for term in TERMS:
            a, b = step_means(r1, one["accum"], steps, term), step_means(rn, many["accum"], steps, term)
            if not a or not b:
                continue
            st = diff_stats(a, b)
            parity[term] = dict(st, one=a, many=b)
            rows.append([term, st["n"], st["first"], st["max"], st["argmax"] + 1, st["mean"], st["max_rel"],
                         st["identical"], a[0], b[0], a[-1], b[-1]])
        lines.append(table(["term", "steps", "|d| step 1", "max |d|", "at step", "mean |d|", "max rel", "identical",
                            f"{args.one} s1", f"{args.many} s1", f"{args.one} last", f"{args.many} last"], rows))
        rows = []
        for term in TERMS:
            xs, ys = micro_batch_pairs(r1, rn, one["accum"], many["accum"], many["procs"], steps, term)
            if xs:
                st = diff_stats(xs, ys)
                parity[f"micro_batch_{term}"] = st
                rows.append([term, st["n"], st["first"], st["max"], st["mean"], st["max_rel"], st["identical"]])
        if rows:
            lines.append("per micro-batch (rank r <-> accumulation step r; needs rank_split='contiguous'):")
            lines.append(table(["term", "micro-batches", "|d| first", "max |d|", "mean |d|", "max rel",
                                "identical"], rows))
        summary["parity"] = parity

    # 2. masks on some ranks only
    section("2. iterations where some ranks had masks and others none (losses.jsonl per_rank loss_mask)")
    rows, masks = [], {}
    for name, run in runs.items():
        if run["procs"] < 2 or name == args.resumed:
            continue
        all_rows, _ = read_rows(osp.join(run["work_dir"], "losses.jsonl"))
        per_iter = by_iter(all_rows)
        mixed, none = [], []
        for it, row in sorted(per_iter.items()):
            values = [v for v in row.get("per_rank", {}).get("loss_mask", []) if v is not None]
            if values and all(v == 0.0 for v in values):
                none.append(it)
            elif any(v == 0.0 for v in values):
                mixed.append(it)
        done = finished(runs, args.resumed) if name == args.killed and args.resumed in runs else finished(runs, name)
        masks[name] = {"mixed": mixed, "none": none, "finished": done}
        example = (f"iter {mixed[0]}: " + " ".join(f"{v:.3g}" for v in per_iter[mixed[0]]["per_rank"]["loss_mask"])
                   if mixed else "-")
        rows.append([name, len(per_iter), len(mixed), " ".join(map(str, mixed[:12])) or "-", example, len(none),
                     done])
    lines.append(table(["run", "iters", "mixed", "mixed iterations", "loss_mask per rank", "no masks at all",
                        "finished"], rows))
    summary["masks"] = masks

    # 3. kill + resume
    kill_path = osp.join(args.out, "kill.json")
    ref, killed = runs.get(args.ref), runs.get(args.killed)
    if ref and killed and osp.isfile(kill_path):
        with open(kill_path) as f:
            kill = json.load(f)
        ref_rows = by_iter(read_rows(osp.join(ref["work_dir"], "losses.jsonl"))[0])
        k_rows, bad = read_rows(osp.join(killed["work_dir"], "losses.jsonl"))
        segs = segments(k_rows)
        resumed_log = osp.join(args.out, f"{args.resumed}.log")
        resume_from = None
        if osp.isfile(resumed_log):
            with open(resumed_log, errors="replace") as f:
                m = re.search(r"--resume auto: \S*iter_(\d+)\.pth", f.read())
            resume_from = int(m.group(1)) if m else None
        before_end = (kill.get("killed") is True and kill.get("last_iter_at_kill", 0) < kill.get("max_iters", 0)
                      and not kill.get("final_checkpoint_at_kill"))
        section("3. kill + resume")
        lines.append(table(["checkpoint", "killed", "last iter logged at kill", "max iters", "kill before end",
                            "pids killed", "survivors", "resumed from", "unreadable lines"],
                           [[kill.get("checkpoint"), kill.get("killed"), kill.get("last_iter_at_kill"),
                             kill.get("max_iters"), before_end, len(kill.get("pids", [])), kill.get("survivors"),
                             resume_from, bad]]))
        rows, res = [], {"kill_before_end": before_end, "resumed_from": resume_from, "segments": len(segs)}
        compare = [("before the kill (same run, no resume: run-to-run noise)", run_rows(runs, args.killed))]
        if args.resumed in runs:
            compare.append(("after the resume", run_rows(runs, args.resumed)))
        for label, seg in compare:
            its = [r["iter"] for r in seg if r["iter"] in ref_rows]
            for term in TERMS:
                a = [r[term] for r in seg if r["iter"] in ref_rows and term in r]
                b = [ref_rows[r["iter"]][term] for r in seg if r["iter"] in ref_rows and term in r]
                st = diff_stats(a, b)
                if st["n"]:
                    res[f"{label.split(' (')[0]}: {term}"] = st
                    rows.append([label if term == "loss" else "", f"{its[0]}-{its[-1]}" if term == "loss" else "",
                                 term, st["n"], st["max"], st["mean"], st["max_rel"], st["identical"]])
        lines.append(table(["iterations of the killed/resumed run vs uninterrupted", "iters", "term", "n",
                            "max |d|", "mean |d|", "max rel", "identical"], rows))
        summary["resume"] = dict(res, kill=kill)

    # 4. throughput
    section(f"4. samples/s (ThroughputHook, all ranks, median over iterations > {args.warmup} (> half of a shorter "
            "run); excludes data loading; 'time' = mmengine's iteration time incl. data)")
    rows, tput = [], {}
    for name, run in runs.items():
        if name in (args.killed, args.resumed):
            continue
        warmup = min(args.warmup, run["iters"] // 2)  # short (CPU dry) runs keep their second half
        sc = [r for r in scalars(run["work_dir"]) if r.get("iter", 0) > warmup and "samples_per_s" in r]
        if not sc:
            continue
        sps = statistics.median(r["samples_per_s"] for r in sc)
        t = statistics.median(r["time"] for r in sc if "time" in r)
        tput[name] = {"procs": run["procs"], "accum": run["accum"], "samples_per_s": sps, "iter_time_s": t,
                      "iters": len(sc)}
        rows.append([name, run["procs"], run["accum"], len(sc), sps, t])
    base = next((v for v in tput.values() if v["procs"] == 1), None)
    for row in rows:
        speedup = tput[row[0]]["samples_per_s"] / base["samples_per_s"] if base else None
        row += [speedup, speedup / row[1] if speedup else None]
    lines.append(table(["run", "procs", "accum", "iters", "samples/s", "median time s", "vs 1 proc",
                        "per-proc efficiency"], rows))
    summary["throughput"] = tput

    text = "\n".join(lines).lstrip("\n")
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
