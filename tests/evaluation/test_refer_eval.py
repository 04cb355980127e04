"""evaluate_refer / evaluate_region_captions plumbing with a stand-in predictor: first mask per answer, no-[SEG]
counted, shards merge to exactly the single-process numbers."""
import re

import numpy as np
import pytest
import torch

from sa2va.evaluation import evaluate_refer
from sa2va.evaluation.caption_eval import regions_of
from sa2va.inference import Prediction


class FakeView(list):
    """Eval-view items: per image, sentences with their GT masks."""


def _view(n_images=7, seed=0):
    rng = np.random.default_rng(seed)
    view = FakeView()
    for i in range(n_images):
        n = int(rng.integers(1, 5))
        masks = torch.from_numpy(rng.random((n, 6, 8)) < 0.4).to(torch.uint8)
        view.append(dict(image=f"img{i}", image_id=100 + i, texts=[f"s{i}_{j}" for j in range(n)],
                         masks=masks, ref_ids=[j // 2 for j in range(n)], ann_ids=[10 * i + j // 2 for j in range(n)]))
    return view


class FakePredictor:
    """Answers sentence ``s{i}_{j}`` with (j % 3) masks (0 = no [SEG]); masks are deterministic per sentence."""

    def __init__(self):
        self.calls = []

    def predict_many(self, image, texts):
        self.calls.append((image, list(texts)))
        out = []
        for t in texts:
            i, j = map(int, re.search(r"s(\d+)_(\d+)", t).groups())
            g = torch.Generator().manual_seed(1000 * i + j)
            masks = torch.rand(j % 3, 6, 8, generator=g) < 0.5
            out.append(Prediction(text="[SEG]" * (j % 3), token_ids=[], masks=masks))
        return out


def test_refer_eval_uses_first_mask_and_counts_missing():
    view = _view()
    pred = FakePredictor()
    seen = []
    out = evaluate_refer(pred, view, prompt="<image>\nsegment {sent} now", return_sentences=True,
                         on_item=lambda i, item, preds: seen.append(i))
    assert seen == list(range(len(view)))
    assert pred.calls[0] == ("img0", [f"<image>\nsegment {t} now" for t in view[0]["texts"]])
    sentences = out["sentences"]
    assert out["n_sentences"] == len(sentences) == sum(len(v["texts"]) for v in view)
    assert out["n_no_seg"] == sum(1 for s in sentences if s["sentence_index"] % 3 == 0)
    # recompute by hand from the stand-in's first masks
    inter = union = 0
    ious = []
    for item in view:
        for j, text in enumerate(item["texts"]):
            g = item["masks"][j].bool()
            p = FakePredictor().predict_many(None, [text])[0].masks
            if p.shape[0] == 0:
                union += int(g.sum())
                ious.append(0.0)
                continue
            i_, u_ = int((p[0] & g).sum()), int((p[0] | g).sum())
            inter, union = inter + i_, union + u_
            ious.append(1.0 if u_ == 0 else i_ / u_)
    assert out["cIoU"] == pytest.approx(inter / union) and out["gIoU"] == pytest.approx(sum(ious) / len(ious))
    assert {s["ref_id"] for s in sentences} <= {0, 1} and sentences[0]["answer"] == ""


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_merge_to_the_single_process_result(world_size):
    view = _view(n_images=8, seed=1)
    prompt = "<image>\nsegment {sent} now"
    single = evaluate_refer(FakePredictor(), view, prompt=prompt, return_sentences=True)
    parts = [evaluate_refer(FakePredictor(), view, prompt=prompt, return_sentences=True, rank=r,
                            world_size=world_size) for r in range(world_size)]
    images = [s["image_id"] for p in parts for s in p["sentences"]]
    assert sorted(set(images)) == [100 + i for i in range(8)]  # every image once
    from sa2va.evaluation.metrics import ReferSegMetric

    fields = ("key", "intersection", "union", "gt_area", "pred_area", "has_prediction")
    merged = ReferSegMetric.from_records({k: s[k] for k in fields} for p in parts for s in p["sentences"])
    expected = {k: v for k, v in single.items() if k not in ("sentences", "n_images")}
    assert merged.compute() == expected  # bit-identical


def test_max_items_and_prompt_check():
    view = _view()
    assert evaluate_refer(FakePredictor(), view, max_items=2, prompt="{sent}")["n_images"] == 2
    with pytest.raises(ValueError, match="sent"):
        evaluate_refer(FakePredictor(), view, prompt="no placeholder")


def test_regions_group_sentences_by_ref():
    item = _view()[3]
    regions = regions_of(item)
    assert [r["ref_id"] for r in regions] == sorted({j // 2 for j in range(len(item["texts"]))})
    assert sum(len(r["references"]) for r in regions) == len(item["texts"])


def test_bare_model_in_training_mode_on_real_refer_data(tiny_model, tmp_path):
    """What a training hook calls: a model in train mode + a ReferSegmDataset; the mode is restored."""
    from sa2va.datasets import DirectResize, ReferSegmDataset
    from sa2va.datasets.synthetic import make_synthetic_data

    paths = make_synthetic_data(tmp_path, seed=0, num_images=6)
    dataset = ReferSegmDataset(data_root=paths["refcoco"], data_prefix=dict(img_path="../../coco2014/train2014/"),
                               tokenizer=tiny_model.tokenizer, template="qwen_chat", tile_size=112, split="val",
                               extra_image_processor=dict(type=DirectResize, target_length=256))
    tiny_model.train()
    try:
        out = evaluate_refer(tiny_model, dataset, max_items=1, max_new_tokens=4)
        assert tiny_model.training  # mode restored
    finally:
        tiny_model.eval()
    assert out["n_images"] == 1 and out["n_sentences"] == len(dataset.eval_view()[0]["texts"])
    assert set(out) >= {"cIoU", "gIoU", "n_no_seg"}


@pytest.mark.parametrize("with_seg", [True, False], ids=["seg_and_captions", "captions_only"])
def test_eval_hook_logs_scores_and_writes_captions(tiny_model, tmp_path, with_seg):
    """ReferEvalHook at the end of training: cIoU and caption exact match go to the message hub, and the region
    captions (prediction + references) are written under work_dir/eval for inspection. The caption split is
    evaluated through its own dataset (ReferRegionCaptionDataset.eval_view), also without a segmentation split of
    the same name."""
    import json
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger

    from sa2va.datasets import DirectResize, ReferRegionCaptionDataset, ReferSegmDataset
    from sa2va.datasets.synthetic import make_synthetic_data
    from sa2va.engine import ReferEvalHook

    paths = make_synthetic_data(tmp_path / "data", seed=0, num_images=6)
    common = dict(data_root=paths["refcoco"], data_prefix=dict(img_path="../../coco2014/train2014/"),
                  tokenizer=tiny_model.tokenizer, template="qwen_chat", tile_size=112, split="val")
    seg = dict(val=dict(type=ReferSegmDataset, **common, extra_image_processor=dict(type=DirectResize,
                                                                                   target_length=256)))
    hook = ReferEvalHook(datasets=seg if with_seg else None,
                         caption_datasets=dict(val=dict(type=ReferRegionCaptionDataset, split_file="refs(unc).p",
                                                        **common)),
                         max_items=1, max_new_tokens=4)
    hub = MessageHub.get_instance(f"test_eval_hook_{with_seg}")
    runner = SimpleNamespace(model=tiny_model, message_hub=hub, logger=MMLogger.get_current_instance(), iter=7,
                             work_dir=str(tmp_path / "work"), max_iters=7)
    hook.after_train(runner)
    assert with_seg == ("val/val/cIoU" in hub.log_scalars)
    if with_seg:
        assert 0.0 <= hub.get_scalar("val/val/cIoU").current() <= 1.0
    records = json.loads((tmp_path / "work" / "eval" / "val_captions_iter7.json").read_text())
    assert isinstance(hook._built["caption", "val"], ReferRegionCaptionDataset)
    view_item = hook._built["caption", "val"].eval_view()[0]
    assert len(records) == len(regions_of(view_item)) > 0
    assert all(isinstance(r["prediction"], str) and r["references"] for r in records)
    assert 0.0 <= hub.get_scalar("val/val/caption_exact_match").current() <= 1.0


def test_caption_exact_match_ignores_refer_tokenised_punctuation():
    from sa2va.engine.eval_hook import caption_exact_match

    refs = ["a purple circle located at the center left of the picture",   # REFER ``sent``: tokenised, lower case
            "the purple circle that is on the left , near the center"]
    records = [dict(prediction="The purple circle that is on the left, near the center.", references=refs),
               dict(prediction="A purple circle located at the center left of the picture.", references=refs),
               dict(prediction="The purple square that is on the left, near the center.", references=refs),
               dict(prediction="The purple circle that is on the left near the", references=refs)]
    assert caption_exact_match(records) == 0.5
