"""benchmarks/compare_runs.py on hand-made run directories: accumulation windows, rank <-> micro-batch mapping,
killed/resumed segments sharing one losses.jsonl."""
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("compare_runs", REPO / "benchmarks" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


def _write(path: Path, rows):
    path.mkdir(parents=True, exist_ok=True)
    (path / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _micro(step, k):  # the loss of micro-batch k of optimizer step `step` (1-based)
    return 10.0 - step + 0.1 * k


def test_parity_resume_and_masks(tmp_path):
    steps = 4
    # 1 process, accumulation 2: iteration 2(s-1)+k+1 is micro-batch k of step s
    par1 = [{"iter": 2 * (s - 1) + k + 1, "loss": _micro(s, k), "loss_mask": float(k == 0)}
            for s in range(1, steps + 1) for k in range(2)]
    # 2 processes: rank r holds micro-batch r; step 3's rank 1 is off by 0.5
    par2 = []
    for s in range(1, steps + 1):
        per = [_micro(s, 0), _micro(s, 1) + (0.5 if s == 3 else 0.0)]
        par2.append({"iter": s, "loss": sum(per) / 2, "loss_mask": 0.5,
                     "per_rank": {"loss": per, "loss_mask": [1.0, 0.0]}})
    ref = [{"iter": i, "loss": 5.0 + i, "per_rank": {"loss_mask": [0.0, 0.0]}} for i in range(1, 7)]
    # killed after iteration 4 (checkpoint at 3), resumed from 3: iteration 5 differs by 0.25 after the resume
    killed = [dict(r) for r in ref[:4]]
    resumed = [dict(ref[3])] + [dict(ref[4], loss=ref[4]["loss"] + 0.25), dict(ref[5])]
    out = tmp_path / "out"
    for name, rows in (("par1", par1), ("par2", par2), ("ref2", ref), ("kill2", killed + resumed)):
        _write(out / "work" / name, rows)
    lines = ["name\tprocs\taccum\titers\trc\twall_s\twork_dir"]
    for name, procs, accum, iters, rc, wd in (("par1", 1, 2, 8, 0, "par1"), ("par2", 2, 1, 4, 0, "par2"),
                                              ("ref2", 2, 1, 6, 0, "ref2"), ("kill2", 2, 1, 6, 137, "kill2"),
                                              ("resume2", 2, 1, 6, 0, "kill2")):
        lines.append(f"{name}\t{procs}\t{accum}\t{iters}\t{rc}\t1\t{out / 'work' / wd}")
    (out / "runs.tsv").write_text("\n".join(lines) + "\n")
    (out / "kill.json").write_text(json.dumps({"checkpoint": 3, "killed": True, "last_iter_at_kill": 4,
                                               "max_iters": 6, "final_checkpoint_at_kill": False, "pids": [1, 2],
                                               "survivors": 0}))
    (out / "resume2.log").write_text("x - mmengine - INFO - --resume auto: /somewhere/kill2/iter_3.pth\n")
    assert compare_runs.main([str(out), "--json", str(out / "s.json")]) == 0
    s = json.loads((out / "s.json").read_text())

    loss = s["parity"]["loss"]
    assert loss["n"] == steps and loss["identical"] == steps - 1 and loss["argmax"] == 2
    assert abs(loss["max"] - 0.25) < 1e-12  # the step mean moves by half of rank 1's 0.5
    micro = s["parity"]["micro_batch_loss"]
    assert micro["n"] == 2 * steps and micro["identical"] == 2 * steps - 1 and abs(micro["max"] - 0.5) < 1e-12
    assert s["parity"]["loss_mask"]["identical"] == steps  # (1 + 0) / 2 on both sides

    assert s["masks"]["par2"]["mixed"] == [1, 2, 3, 4] and s["masks"]["ref2"]["none"] == list(range(1, 7))
    assert s["masks"]["kill2"]["finished"] is True  # finished by its resumed run

    res = s["resume"]
    assert res["kill_before_end"] is True and res["resumed_from"] == 3
    assert res["before the kill: loss"]["identical"] == 4
    after = res["after the resume: loss"]
    assert after["n"] == 3 and after["identical"] == 2 and abs(after["max"] - 0.25) < 1e-12


def test_segments_and_unreadable_lines(tmp_path):
    (tmp_path / "losses.jsonl").write_text('{"iter": 1}\n{"iter": 2}\n{"iter": 2, "lo\n{"iter": 2}\n{"iter": 3}\n')
    rows, bad = compare_runs.read_rows(str(tmp_path / "losses.jsonl"))
    assert bad == 1 and [[r["iter"] for r in seg] for seg in compare_runs.segments(rows)] == [[1, 2], [2, 3]]
