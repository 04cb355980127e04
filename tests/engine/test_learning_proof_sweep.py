"""benchmarks/learning_proof_sweep.py: run specs become the right config changes; captions are scored per
attribute."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("learning_proof_sweep", REPO / "benchmarks" / "learning_proof_sweep.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def test_variant_options_reach_every_dataset_and_the_asset_root():
    base = sweep.variant_config({})
    name, opts = sweep.parse_spec("t448:tile=448,ncls=2,iters=500,mask_weight=3,decoder_lr_mult=0.5,"
                                  "optim_wrapper.optimizer.lr=1e-3")
    c = sweep.variant_config(opts)
    assert name == "t448"
    root = base.prepare.root + "_448"
    assert c.prepare.root == root and c.prepare.internvl.image_size == 448
    assert c.model.mllm.model_path.startswith(root) and c.model.grounding_encoder.ckpt_path.startswith(root)
    hook = c.custom_hooks[0]
    for d in list(c.train_dataloader.dataset.datasets) + [hook.datasets.refcocog_val]:
        assert d.tile_size == 448 and d.num_classes_per_sample == 2 and d.data_root.startswith(root)
    assert c.train_cfg.max_iters == 500 and c.param_scheduler[-1].end == 500
    assert c.model.loss_mask.loss_weight == pytest.approx(3 * base.model.loss_mask.loss_weight)
    assert c.optim_wrapper.paramwise_cfg.custom_keys.sam_mask_decoder.lr_mult == 0.5
    assert c.optim_wrapper.optimizer.lr == pytest.approx(1e-3)
    assert "type=" in c.pretty_text  # still dumpable (lazy objects were not built into the tree)
    with pytest.raises(SystemExit, match="key=value"):
        sweep.parse_spec("x:ncls")


def test_attribute_accuracy_reads_the_first_word_of_each_kind():
    refs = ["A red circle located at the top left of the picture.", "The red circle that is on the left, near the top."]
    records = [dict(prediction="A red square located at the top left of the picture.", references=refs),
               dict(prediction="The blue circle that is on the right, near the top.", references=refs)]
    acc = sweep.attribute_accuracy(records)
    assert acc == dict(colour=0.5, shape=0.5, hpos=0.5, vpos=1.0)
