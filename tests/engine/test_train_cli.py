"""tools/train.py end to end on the demo config (tiny models, synthetic data), on CPU.

* trains and writes complete checkpoints, loss curve, logs;
* resume exactness: 8 steps straight == 4 steps, SIGKILL, ``--resume auto``, 4 more (same per-step losses and
  the same final trainable weights, bit for bit);
* ``--resume auto`` never picks a truncated checkpoint;
* ``tools/dist.sh`` with 2 processes (gloo).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

OPTS = ["train_cfg.max_epochs=None", "train_cfg.max_iters=8", "default_hooks.checkpoint.interval=4",
        "default_hooks.logger.interval=1", "log_processor.window_size=1", "save_steps=4"]


@pytest.fixture(scope="module")
def demo_assets(tmp_path_factory):
    """The demo's assets, made once; every run links them into its own working directory."""
    from sa2va.demo import make_demo_assets

    root = tmp_path_factory.mktemp("demo_assets")
    make_demo_assets(root, seed=0, num_images=48)  # the config's arguments, so `prepare` reuses them
    return root


def _workdir(tmp_path, demo_assets, name):
    cwd = tmp_path / name
    (cwd / "work_dirs").mkdir(parents=True)
    os.symlink(demo_assets, cwd / "work_dirs" / "sa2va_demo_assets")
    return cwd


def _train_cmd(*extra):
    return [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "sa2va_demo.py"),
            "--work-dir", "run", "--cfg-options", *OPTS, *extra]


def _losses(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    return {r["iter"]: r for r in rows}  # a re-run iteration keeps its latest row


def _run(cmd, cwd, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_resume_after_sigkill_is_exact(tmp_path, demo_assets):
    # uninterrupted run
    straight = _workdir(tmp_path, demo_assets, "straight")
    proc = _run(_train_cmd(), straight)
    run_a = straight / "run"
    assert (run_a / "iter_8.pth").is_file() and (run_a / "iter_8.pth.complete").is_file()
    assert (run_a / "loss_curve.png").stat().st_size > 1000
    assert "samples_per_s" in proc.stdout + proc.stderr and "grad_norm" in proc.stdout + proc.stderr

    # killed right after the checkpoint at iteration 4, then resumed
    killed = _workdir(tmp_path, demo_assets, "killed")
    p = subprocess.Popen(_train_cmd(), cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "run" / "iter_4.pth.complete"
    deadline = time.time() + 600
    while not marker.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "run" / "iter_8.pth.complete").exists()
    _run(_train_cmd("--resume", "auto"), killed)

    a, b = _losses(run_a), _losses(killed / "run")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for it in range(1, 9):
        assert a[it] == b[it], (it, a[it], b[it])
    from sa2va.engine import register_checkpoint_safe_globals

    register_checkpoint_safe_globals()  # numpy scalars in mmengine's meta
    sd_a = torch.load(run_a / "iter_8.pth", weights_only=True)["state_dict"]
    sd_b = torch.load(killed / "run" / "iter_8.pth", weights_only=True)["state_dict"]
    assert sd_a.keys() == sd_b.keys() and len(sd_a) > 10
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k

    # a truncated newest checkpoint is never picked
    from sa2va.engine import find_resumable_checkpoint

    assert find_resumable_checkpoint(str(run_a)) == str(run_a / "iter_8.pth")
    with open(run_a / "iter_8.pth", "r+b") as f:
        f.truncate(1000)
    assert find_resumable_checkpoint(str(run_a)) == str(run_a / "iter_4.pth")


CURRICULUM_CONFIG = """
from mmengine.config import read_base

from sa2va.datasets import LengthGroupedSampler, TaskCurriculumSampler

with read_base():
    from .sa2va_demo import *  # noqa: F401,F403

# region captions (dataset 2) alone for 6 batches, then everything (the learning proof's curriculum)
train_dataloader.sampler = dict(  # noqa: F405
    type=TaskCurriculumSampler, first_iters=6, first_datasets=[2], batch_size=batch_size,  # noqa: F405
    sampler=dict(type=LengthGroupedSampler, per_device_batch_size=batch_size, endless=True))  # noqa: F405
"""


def test_resume_with_a_curriculum_sampler_seeks_and_is_exact(tmp_path, demo_assets):
    """A run resumed from iteration 4 of 8, still in the curriculum's first stage (batches 1-6): the sampler
    seeks (no batch re-read) and the resumed iterations 5-8, across the stage change, match the uninterrupted run."""
    import shutil

    def cmd(cwd, *extra):
        shutil.copy(REPO / "configs" / "sa2va_demo.py", cwd)  # beside the curriculum config, for read_base
        (cwd / "curriculum.py").write_text(CURRICULUM_CONFIG)
        return [sys.executable, str(REPO / "tools" / "train.py"), "curriculum.py", "--work-dir", "run",
                "--cfg-options", *OPTS, *extra]

    straight = _workdir(tmp_path, demo_assets, "straight")
    _run(cmd(straight), straight)
    resumed = _workdir(tmp_path, demo_assets, "resumed")
    (resumed / "run").mkdir()
    for name in ("iter_4.pth", "iter_4.pth.complete"):
        shutil.copy(straight / "run" / name, resumed / "run" / name)
    proc = _run(cmd(resumed, "--resume", "auto"), resumed)
    assert "resumed data stream at iteration 4" in proc.stdout + proc.stderr
    assert "batches to skip them" not in proc.stdout + proc.stderr  # nothing re-read
    a, b = _losses(straight / "run"), _losses(resumed / "run")
    assert sorted(b) == [5, 6, 7, 8]
    for it in range(5, 9):
        assert a[it] == b[it], (it, a[it], b[it])
    captions_only = [a[it]["loss_mask"] == 0 for it in range(1, 9)]  # region captions have no masks
    assert captions_only[:6] == [True] * 6 and not all(captions_only[6:])


def test_dist_sh_two_processes_on_cpu(tmp_path, demo_assets):
    cwd = _workdir(tmp_path, demo_assets, "dist")
    env = dict(os.environ, DEEPSPEED="none")
    cmd = ["bash", str(REPO / "tools" / "dist.sh"), "train", str(REPO / "configs" / "sa2va_demo.py"), "2",
           "--work-dir", "run", "--cfg-options", *OPTS[:2], "train_cfg.max_iters=4",
           "default_hooks.checkpoint.interval=4"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (cwd / "run" / "iter_4.pth.complete").is_file()
    log = proc.stdout + proc.stderr
    assert ("world_size: 2" in log or "'world_size': 2" in log or "Distributed launcher: pytorch" in log
            or "Iter(train) [4/4]" in log)
