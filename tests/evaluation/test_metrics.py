"""cIoU / gIoU on hand-made masks with hand-computed values; caption metrics on known captions."""
import math
import random
import shutil

import numpy as np
import pytest
import torch

from sa2va.evaluation.metrics import ReferSegMetric, caption_metrics, intersection_union


def _mask(rows=(), cols=slice(None), shape=(4, 4)):
    m = np.zeros(shape, np.uint8)
    for r in rows:
        m[r, cols] = 1
    return m


EMPTY = _mask()


def _image_a(metric):
    """Five sentences of one 4x4 image; (I, U, IoU) in the comments."""
    metric.add(_mask([2, 1]), _mask([0, 1]), key=("a", 0))               # I=4  U=12 IoU=1/3
    metric.add(EMPTY, _mask([0, 1], slice(0, 2)), key=("a", 1))          # I=0  U=4  IoU=0   (empty prediction)
    metric.add(EMPTY, EMPTY, key=("a", 2))                               # I=0  U=0  IoU=1   (empty vs empty)
    metric.add(_mask([3], slice(0, 2)), EMPTY, key=("a", 3))             # I=0  U=2  IoU=0   (empty ground truth)
    metric.add(None, _mask([0, 1], slice(0, 3)), key=("a", 4))           # no [SEG]: I=0 U=6 IoU=0


def _image_b(metric):
    """An image whose sentences all have no prediction (the original evaluation crashed here)."""
    metric.add(None, _mask([0], slice(0, 3)), key=("b", 0))              # U=3
    metric.add(None, _mask([1], slice(0, 4)) | _mask([2], slice(0, 1)), key=("b", 1))  # U=5


def test_hand_computed_ciou_giou():
    metric = ReferSegMetric()
    _image_a(metric)
    _image_b(metric)
    out = metric.compute()
    assert out["n_sentences"] == 7 and out["n_no_seg"] == 3
    assert out["cIoU"] == 4 / 32                      # sum I / sum U, no-[SEG] ground truth in the union
    assert out["gIoU"] == pytest.approx((1 / 3 + 1) / 7, abs=1e-15)  # mean per-sentence IoU, 7 sentences
    assert out["cIoU_excl_no_seg"] == 4 / 18           # the original convention, for comparison


def test_image_with_only_missing_predictions():
    metric = ReferSegMetric()
    _image_b(metric)
    out = metric.compute()
    assert out["cIoU"] == 0.0 and out["gIoU"] == 0.0 and out["n_no_seg"] == 2
    assert math.isnan(out["cIoU_excl_no_seg"])


def test_all_empty_is_perfect_and_nothing_is_nan():
    metric = ReferSegMetric()
    metric.add(EMPTY, EMPTY, key=0)
    assert metric.compute()["cIoU"] == 1.0 and metric.compute()["gIoU"] == 1.0
    out = ReferSegMetric().compute()
    assert out["n_sentences"] == 0 and math.isnan(out["cIoU"]) and math.isnan(out["gIoU"])


def test_sharded_records_merge_bit_identically():
    rng = np.random.default_rng(0)
    full = ReferSegMetric()
    for i in range(200):
        gt = rng.random((9, 7)) < rng.random()
        pred = None if i % 7 == 0 else rng.random((9, 7)) < rng.random()
        full.add(pred, gt, key=(i // 5, i % 5))
    records = full.to_records()
    random.Random(1).shuffle(records)
    shards = [ReferSegMetric.from_records(records[k::3]) for k in range(3)]
    merged = ReferSegMetric()
    for s in reversed(shards):
        merged.merge(s)
    assert merged.compute() == full.compute()  # exact, not approximate
    with pytest.raises(ValueError, match="recorded twice"):
        merged.merge(shards[0]).compute()


def test_inputs_are_checked():
    assert intersection_union(torch.tensor([[1, 2], [0, 0]]), np.array([[True, False], [True, False]])) == (1, 3)
    with pytest.raises(ValueError, match=r"\('img', 3\).*differ in size"):
        ReferSegMetric().add(np.zeros((4, 5)), np.zeros((4, 4)), key=("img", 3))


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")


@needs_java
def test_caption_metrics_known_values():
    pytest.importorskip("pycocoevalcap")
    refs = {1: ["the red circle on the left", "a red circle"], 2: ["this is a blue square", "blue square"],
            3: ["the green triangle at the top"], 4: ["a yellow star"], 5: ["the purple rectangle"]}
    # 1-3 differ from a reference only in case and punctuation; 4 is wrong; 5 is empty
    preds = {1: "The red circle on the left.", 2: "This is a blue square!", 3: "the green triangle at the top",
             4: "a dog on the grass", 5: ""}
    out = caption_metrics(preds, refs, per_item=True)  # one call: METEOR's Java start-up takes many seconds
    assert set(out) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "n_items", "per_item"}
    assert out["n_items"] == 5
    item = out["per_item"]
    for k in (1, 2, 3):  # nothing but lower-casing / punctuation stands between them and a reference
        assert item["METEOR"][k] > 0.95 and item["ROUGE_L"][k] == pytest.approx(1.0), k
        assert item["CIDEr"][k] > 2.0 and item["Bleu_1"][k] == pytest.approx(1.0, abs=1e-6), k
    for k in (4, 5):
        assert item["METEOR"][k] < 0.3 and item["CIDEr"][k] < 0.5, k
    assert 0 < out["METEOR"] < 1 and out["CIDEr"] == pytest.approx(sum(item["CIDEr"].values()) / 5)
    with pytest.raises(ValueError, match="different items"):
        caption_metrics({1: "x"}, refs)
