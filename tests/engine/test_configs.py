"""The shipped configs parse and say what their headers promise."""
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _load(name):
    return Config.fromfile(str(CONFIGS / name))


def test_4b_recipe_values():
    c = _load("sa2va_refcoco_only.py")
    lora = c.model.mllm.llm_lora
    assert (lora.r, lora.lora_alpha) == (128, 256)
    assert c.optim_wrapper.optimizer.lr == 4e-5 and c.optim_wrapper.optimizer.weight_decay == 0.05
    assert c.optim_wrapper.clip_grad.max_norm == 1 and c.optim_wrapper.accumulative_counts == 4
    assert c.train_dataloader.batch_size == 2 and c.train_cfg.max_epochs == 1
    assert c.param_scheduler[0].end == pytest.approx(0.05) and c.param_scheduler[1].begin == pytest.approx(0.05)
    assert [d.name for d in c.train_dataloader.dataset.datasets] == ["refcoco", "refcoco+", "refcocog"]
    assert [d.split_file for d in c.train_dataloader.dataset.datasets] == ["refs(unc).p", "refs(unc).p", "refs(umd).p"]
    assert c.model.grounding_encoder.ckpt_path.endswith("sam2_hiera_large.pt")


def test_1b_overrides_path_and_template_everywhere():
    c = _load("sa2va_1b_refcoco_only.py")
    assert c.model.mllm.model_path.endswith("InternVL2_5-1B")
    for d in c.train_dataloader.dataset.datasets:
        assert d.template == "qwen_chat" and d.tokenizer.pretrained_model_name_or_path.endswith("InternVL2_5-1B")
    assert c.model.mllm.llm_lora.r == 128  # the rest is inherited


def test_maskcap_adds_caption_sources():
    names = [d.name for d in _load("sa2va_refcoco_maskcap.py").train_dataloader.dataset.datasets]
    assert names[:3] == ["refcoco", "refcoco+", "refcocog"]
    assert {"refcocog_region_caption", "osprey_conversation", "custom_caption"} <= set(names)


def test_demo_is_self_contained():
    c = _load("sa2va_demo.py")
    assert c.prepare.root == c.assets and c.model.mllm.model_path.startswith(c.assets)


def test_learning_proof_trains_everything_from_its_own_assets():
    c = _load("sa2va_learning_proof.py")
    m = c.model
    assert m.mllm.llm_lora is None and m.mllm.freeze_llm is False and m.mllm.freeze_visual_encoder is False
    assert m.mllm.new_token_training == "full" and m.mllm.torch_dtype == "float32"
    assert m.grounding_encoder.freeze_image_encoder is False
    assert m.mllm.model_path.startswith(c.prepare.root) and m.grounding_encoder.cfg_path.startswith(c.prepare.root)
    names = [d.name for d in c.train_dataloader.dataset.datasets]
    assert names == ["refcocog", "refcocog_region_caption"]
    # train and evaluation use the disjoint refcocog splits
    hook = c.custom_hooks[0]
    assert hook.datasets.refcocog_val.split == "val" and hook.caption_datasets.refcocog_val.split == "val"
    assert all(d.split == "train" for d in c.train_dataloader.dataset.datasets)
    assert c.param_scheduler[-1].end == c.train_cfg.max_iters
    # the measured choices: up to 3 questions per segmentation image and one region per caption sample (one
    # question per evaluated item), mask losses x25, the SAM2 decoder at lr x0.1 and x0.3 from iteration 1500, the
    # LLM at x0.25, batch 64, the region captions (dataset 1) alone for the first 400 of 3000 iterations
    seg, caption = c.train_dataloader.dataset.datasets
    assert (seg.num_classes_per_sample, caption.num_classes_per_sample) == (3, 1)
    assert hook.datasets.refcocog_val.num_classes_per_sample == 1
    assert (m.loss_mask.loss_weight, m.loss_dice.loss_weight) == (50.0, 12.5)
    sampler = c.train_dataloader.sampler
    assert c.train_dataloader.batch_size == 64 == sampler.batch_size == sampler.sampler.per_device_batch_size
    assert (sampler.first_iters, sampler.first_datasets, c.train_cfg.max_iters) == (400, [1], 3000)
    assert set(sampler) == {"type", "first_iters", "first_datasets", "batch_size", "sampler"}  # nothing merged in
    assert sampler.sampler.endless is True  # no empty worker pipeline at each of its short epochs
    assert c.optim_wrapper.paramwise_cfg.custom_keys.sam_mask_decoder.lr_mult == 0.1
    assert c.optim_wrapper.paramwise_cfg.custom_keys.language_model.lr_mult == 0.25
    # an LLM init whose attention is not saturated, and SAM2's single-mask output (its IoU head is untrained)
    assert c.prepare.internvl.text_init_range == 0.05 and m.grounding_encoder.multimask_output is False
    assert m.prompt_init_gain == 4.0 and c.custom_hooks[1].max_seconds == 480
    step = c.custom_hooks[2]
    assert (step.key, step.at_iter, step.factor) == ("sam_mask_decoder", 1500, 3.0)
