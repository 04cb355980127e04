"""tools/test.py end to end on the demo config's synthetic REFER splits: every split prints cIoU and gIoU, writes
its JSON and overlays; two processes under torchrun report exactly the single-process numbers."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "sa2va_demo.py"
TOOL = REPO / "tools" / "test.py"
# 12 synthetic images instead of the demo's 48 (faster assets); 2 images per split
OPTIONS = {"prepare.num_images": 12}
COMMON = ["--max-items", "2", "--max-new-tokens", "8", "--num-vis", "1", "--cfg-options", "prepare.num_images=12"]

pytestmark = pytest.mark.skipif(not DEMO_CONFIG.is_file(), reason="configs/sa2va_demo.py not present")


def _import_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sa2va_test_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    """The demo config's assets under a temp dir and a checkpoint of its (untrained) model whose [SEG] head row
    copies that of the token the untrained model emits most often on the val images, so answers contain [SEG]s."""
    from collections import Counter

    from sa2va.evaluation.refer_eval import EVAL_PROMPT
    from sa2va.inference import Sa2VAPredictor
    from sa2va.inference.loading import load_model_from_config

    root = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(root)  # the demo writes its assets relative to the working directory
    try:
        torch.manual_seed(0)
        model, settings = load_model_from_config(DEMO_CONFIG, None, device="cpu", dtype="float32",
                                                 cfg_options=OPTIONS)
        predictor = Sa2VAPredictor(model, **{**settings, "max_new_tokens": 8})
        images = sorted(root.glob("work_dirs/*/data/coco2014/train2014/*.jpg"))[:4]
        assert images, f"no demo images under {root}"
        emitted = Counter(t for image in images for p in predictor.predict_many(
            image, [EVAL_PROMPT.format(sent=s) for s in ("the red circle", "blue square")]) for t in p.token_ids)
        liked = emitted.most_common(1)[0][0]
        state = model.state_dict()
        head = next(k for k in state if "lm_head" in k and "trainable_tokens_delta" in k)  # rows of the new tokens
        base = model.mllm.lm_head.base_layer.weight if hasattr(model.mllm.lm_head, "base_layer") \
            else model.mllm.lm_head.weight
        state[head][0] = base[liked] * 1.05  # row 0 = [SEG]: wins wherever the liked token would
        torch.save({"state_dict": state, "meta": {}}, root / "demo_ckpt.pth")
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture(scope="module")
def single_run(demo_checkpoint):
    """tools/test.py in this process, all RefCOCO splits: (results, printed text)."""
    import contextlib
    import io

    cwd = os.getcwd()
    os.chdir(demo_checkpoint)
    try:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            results = _import_tool().main([str(DEMO_CONFIG), "demo_ckpt.pth", "--dataset", "refcoco", "--all-splits",
                                           "--work-dir", "single", *COMMON])
    finally:
        os.chdir(cwd)
    return results, printed.getvalue()


def test_all_splits_print_both_metrics(demo_checkpoint, single_run):
    results, out = single_run
    lines = [line for line in out.splitlines() if line.startswith("refcoco ")]
    assert [line.split()[1] for line in lines] == ["val", "testA", "testB"]
    assert all("cIoU" in line and "gIoU" in line and "no-[SEG]" in line for line in lines)
    assert sum(r["n_sentences"] - r["n_no_seg"] for r in results) > 0  # some answers did segment
    for split in ("val", "testA", "testB"):
        saved = json.loads((demo_checkpoint / "single" / f"refcoco_{split}_refer.json").read_text())
        assert saved["metrics"]["n_sentences"] == len(saved["results"])
        assert list((demo_checkpoint / "single" / "vis" / f"refcoco_{split}").glob("*.png"))


def test_bad_split_is_refused(capsys):
    tool = _import_tool()
    with pytest.raises(SystemExit):
        tool.parse_args([str(DEMO_CONFIG), "x.pth", "--dataset", "refcoco", "--split", "test"])
    assert "refcoco has no split 'test'" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_equal_single(demo_checkpoint, single_run):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
           str(TOOL), str(DEMO_CONFIG), "demo_ckpt.pth", "--dataset", "refcoco", "--split", "val", *COMMON,
           "--work-dir", "two", "--launcher", "pytorch"]
    proc = subprocess.run(cmd, cwd=demo_checkpoint, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((demo_checkpoint / d / "refcoco_val_refer.json").read_text()) for d in ("single", "two"))
    assert {k: v for k, v in one["metrics"].items() if k != "seconds"} == \
        {k: v for k, v in two["metrics"].items() if k != "seconds"}
    assert one["results"] == two["results"]
    assert one["metrics"]["n_sentences"] > one["metrics"]["n_no_seg"]  # the comparison covers real masks


@pytest.fixture(scope="module")
def export_dir(demo_checkpoint):
    """The demo checkpoint exported (LoRA merged, fp32) with tools/convert_to_hf.py's function."""
    from mmengine.config import Config

    from sa2va.hf import export_from_config

    cwd = os.getcwd()
    os.chdir(demo_checkpoint)
    try:
        cfg = Config.fromfile(DEMO_CONFIG)
        cfg.merge_from_dict(OPTIONS)
        cfg.dump(demo_checkpoint / "demo12.py")
        export_from_config(demo_checkpoint / "demo12.py", "demo_ckpt.pth", demo_checkpoint / "export", dtype="fp32")
    finally:
        os.chdir(cwd)
    return demo_checkpoint / "export"


def _segmenting_sentence(demo_checkpoint):
    """(image path, prompt) of a val sentence the model answered with [SEG] in the single-process run."""
    evaluated = json.loads((demo_checkpoint / "single" / "refcoco_val_refer.json").read_text())
    hit = next(r for r in evaluated["results"] if r["num_masks"])
    image = next((demo_checkpoint / "work_dirs").rglob(f"COCO_train2014_{hit['image_id']:012d}.*"))
    return image, evaluated["prompt"].format(sent=hit["text"])


def test_export_dir_predicts_like_the_training_checkpoint(demo_checkpoint, single_run, export_dir, monkeypatch):
    """An exported directory (LoRA merged, fp32) gives the predictor the same answers and masks as config + CKPT."""
    from sa2va.inference import Sa2VAPredictor

    monkeypatch.chdir(demo_checkpoint)
    image, prompt = _segmenting_sentence(demo_checkpoint)
    texts = [prompt, "What is this?"]
    a = Sa2VAPredictor.from_config(DEMO_CONFIG, "demo_ckpt.pth", device="cpu", cfg_options=OPTIONS,
                                   max_new_tokens=8).predict_many(image, texts)
    b = Sa2VAPredictor.from_pretrained(export_dir, device="cpu", max_new_tokens=8).predict_many(image, texts)
    assert sum(p.masks.shape[0] for p in a) > 0, [p.text for p in a]
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids and x.masks.shape == y.masks.shape
        assert (x.masks != y.masks).float().mean() < 1e-3


def test_infer_cli_text_and_regions(demo_checkpoint, single_run, export_dir, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sa2va_infer_tool", REPO / "tools" / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    image, prompt = _segmenting_sentence(demo_checkpoint)
    pred = infer.main(["--export-dir", str(export_dir), "--image", str(image), "--text", prompt,
                       "--max-new-tokens", "8", "--out", str(tmp_path / "seg.png"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert pred.text in out and f"{pred.masks.shape[0]} mask(s)" in out and pred.masks.shape[0] > 0
    assert (tmp_path / "seg.png").is_file()

    from PIL import Image

    width, height = Image.open(image).size
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: height // 2, width // 4: width // 2] = 255
    Image.fromarray(mask).save(tmp_path / "region.png")
    captions = infer.main(["--export-dir", str(export_dir), "--image", str(image),
                           "--mask", str(tmp_path / "region.png"), "--max-new-tokens", "4",
                           "--out", str(tmp_path / "cap.png"), "--device", "cpu"])
    assert len(captions) == 1 and f"region 1: {captions[0]}" in capsys.readouterr().out
    captions = infer.main(["--export-dir", str(export_dir), "--image", str(image), "--polygon", "10,10,120,10,120,90",
                           "--polygon", "200,200,300,200,300,300,200,300", "--max-new-tokens", "4",
                           "--out", str(tmp_path / "poly.png"), "--device", "cpu"])
    assert len(captions) == 2 and (tmp_path / "poly.png").is_file()
