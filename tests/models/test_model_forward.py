"""VideoLLaVASAMModel end to end on tiny real-architecture checkpoints."""
import pytest
import torch

from model_helpers import caption_sample, collate, model_config, seg_sample
from sa2va import BUILDER


@pytest.fixture(scope="module")
def model(tiny_models):
    torch.manual_seed(0)
    return BUILDER.build(model_config(tiny_models))


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_build_from_config_and_trainable_set(model):
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    groups = {
        "lora": [n for n in trainable if "lora_" in n],
        "projector": [n for n in trainable if "multi_modal_projector" in n],
        "new_token_rows": [n for n in trainable if "trainable_tokens_delta" in n],
        "text_hidden_fcs": [n for n in trainable if n.startswith("text_hidden_fcs")],
        "sam2_decoder": [n for n in trainable if "sam_mask_decoder" in n],
    }
    assert all(groups.values()), {k: len(v) for k, v in groups.items()}
    assert sum(map(len, groups.values())) == len(trainable), "something else is trainable"
    # the new-token rows are exactly the 5 special tokens, on the embedding and the (untied) lm_head
    rows = dict(model.named_parameters())
    assert [tuple(rows[n].shape) for n in groups["new_token_rows"]] == [(5, 64), (5, 64)]
    assert not any("vision_tower" in n for n in trainable)
    assert not any("image_encoder" in n for n in trainable)


def test_mixed_batch_losses_and_gradients(model):
    model.zero_grad(set_to_none=True)
    batch = collate([seg_sample(model, n_masks=2), caption_sample(model)], model.tokenizer.pad_token_id)
    losses = model(batch, mode="loss")
    assert set(losses) == {"llm_loss", "loss_mask", "loss_dice"}
    for k, v in losses.items():
        assert v.ndim == 0 and torch.isfinite(v) and v.item() > 0, (k, v)
    sum(losses.values()).backward()
    grads = _grads(model)
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, missing[:5]
    for part in ("lora_B", "multi_modal_projector", "trainable_tokens_delta", "text_hidden_fcs",
                 "sam_mask_decoder.output_upscaling", "sam_mask_decoder.conv_s0"):
        assert any(g.abs().sum() > 0 for n, g in grads.items() if part in n), f"no gradient reaches {part}"
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad


def test_all_caption_batch_exact_zero_mask_losses(model, monkeypatch):
    model.zero_grad(set_to_none=True)

    def _fail(*a, **k):
        raise AssertionError("SAM2 image encoder must not run on a batch without masks")

    monkeypatch.setattr(model.grounding_encoder.sam2_model.image_encoder, "forward", _fail)
    batch = collate([caption_sample(model), caption_sample(model, tiles=1, seed=3)], model.tokenizer.pad_token_id)
    losses = model(batch, mode="loss")
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert losses["llm_loss"].item() > 0
    sum(losses.values()).backward()
    grads = _grads(model)
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None][:5]
    for n, g in grads.items():
        if "sam_mask_decoder" in n or n.startswith("text_hidden_fcs"):
            assert g.abs().sum().item() == 0.0, n


def test_text_only_batch_keeps_projector_in_graph(model):
    model.zero_grad(set_to_none=True)
    tok = model.tokenizer
    ids = torch.tensor(tok("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nhi",
                           add_special_tokens=False).input_ids)
    text = dict(input_ids=ids, labels=ids.clone(), pixel_values=None, g_pixel_values=None, masks=None,
                prompt_masks=None, frames_per_batch=1)
    losses = model(collate([text, dict(text)]), mode="loss")
    sum(losses.values()).backward()
    assert all(g is not None for g in _grads(model).values())


def test_placeholder_feature_mismatch_names_batch_index(model):
    good, bad = seg_sample(model), caption_sample(model)
    bad["input_ids"] = bad["input_ids"][bad["input_ids"] != model.mllm.img_context_token_id][:5].clone()
    bad["input_ids"] = torch.cat([bad["input_ids"], torch.tensor([model.mllm.img_context_token_id] * 3)])
    bad["labels"] = torch.full_like(bad["input_ids"], -100)
    with pytest.raises(ValueError, match=r"batch index 1: 3 <IMG_CONTEXT> tokens but 37 visual features"):
        model(collate([good, bad]), mode="loss")


def test_seg_mask_count_mismatch_raises_or_skips(model):
    s = seg_sample(model, n_masks=2)
    s["masks"] = s["masks"][:1]
    batch = collate([caption_sample(model), s])
    with pytest.raises(ValueError, match=r"batch index 1: 2 \[SEG\] tokens but 1 masks"):
        model(batch, mode="loss")
    model.skip_seg_mask_mismatch = True
    try:
        before = model.num_skipped_mismatch
        losses = model(batch, mode="loss")
        assert model.num_skipped_mismatch == before + 1
        assert losses["loss_mask"].item() == 0.0
    finally:
        model.skip_seg_mask_mismatch = False


def test_fixed_number_of_objects_option(tiny_models):
    torch.manual_seed(0)
    m = BUILDER.build(model_config(tiny_models, num_objects_per_frame=5, loss_sample_points=False))
    assert m._object_choice(2) == [0, 1, 0, 1, 0]  # repeated when fewer
    subset = m._object_choice(7)  # a random subset when more
    assert len(subset) == 5 and len(set(subset)) == 5 and all(0 <= o < 7 for o in subset)
    s = seg_sample(m, n_masks=2)
    prompts, image_index, gt, _ = m._seg_embeddings(collate([s]), torch.randn(1, len(s["input_ids"]), 64))
    assert prompts.shape[0] == 5 and image_index.tolist() == [0] * 5
    assert torch.equal(prompts[2], prompts[0]) and torch.equal(gt[3], gt[1]) and not torch.equal(gt[0], gt[1])
    losses = m(collate([seg_sample(m, n_masks=2)]), mode="loss")
    assert torch.isfinite(losses["loss_mask"])


def test_targets_gathered_across_mask_sizes_in_sample_order(model):
    """Samples whose masks differ in size are resized per size group, then put back in sample order; a sample
    whose [SEG] count does not match is left out of prompts, targets and frames alike."""
    samples = [seg_sample(model, n_masks=2, hw=(60, 80), seed=0), seg_sample(model, n_masks=1, hw=(48, 48), seed=1),
               caption_sample(model), seg_sample(model, n_masks=3, hw=(60, 80), seed=2)]
    samples[3]["masks"] = samples[3]["masks"].flip(-1)  # different content at the same size
    batch = collate(samples)
    hidden = torch.randn(4, batch["input_ids"].shape[1], 64)
    prompts, image_index, gt, frames = model._seg_embeddings(batch, hidden)
    side = model.grounding_encoder.image_size // 4
    expected = torch.cat([torch.nn.functional.interpolate(s["masks"][None].float(), size=(side, side),
                                                          mode="nearest")[0]
                          for s in samples if s["masks"] is not None])
    assert gt.shape == (6, side, side) and torch.equal(gt, expected)
    assert image_index.tolist() == [0, 0, 1, 2, 2, 2]
    assert torch.equal(frames, torch.stack([s["g_pixel_values"] for s in samples if s["masks"] is not None]))
    is_seg = batch["input_ids"] == model.seg_token_idx
    assert torch.allclose(prompts, model.text_hidden_fcs(hidden[is_seg]))
    samples[1]["masks"] = samples[1]["masks"].repeat(2, 1, 1)  # 1 [SEG], 2 masks
    model.skip_seg_mask_mismatch = True
    try:
        prompts, image_index, gt, frames = model._seg_embeddings(collate(samples), hidden)
    finally:
        model.skip_seg_mask_mismatch = False
    keep = [0, 1, 3, 4, 5]  # the [SEG] rows of samples 0 and 3
    assert torch.allclose(prompts, model.text_hidden_fcs(hidden[is_seg])[keep])
    assert torch.equal(gt, expected[[0, 1, 3, 4, 5]]) and image_index.tolist() == [0, 0, 1, 1, 1]
    assert frames.shape[0] == 2


def test_visual_embeddings_order_tiles_then_regions(model, monkeypatch):
    """Per sample: its tiles' tokens, then each region's thumbnail cells (row-major) - against a per-sample loop."""
    mllm = model.mllm
    n, g = mllm.tokens_per_tile, mllm.prompt_grid
    num_tiles = [2, 0, 1, 3, 1]
    feats = torch.randn(sum(num_tiles), n, 8)
    monkeypatch.setattr(mllm, "image_features", lambda pixel_values: feats)
    gen = torch.Generator().manual_seed(0)
    prompt_masks = [None, None, (torch.rand(2, g, g, generator=gen) > 0.5).to(torch.uint8),
                    (torch.rand(1, g, g, generator=gen) > 0.7).to(torch.uint8),
                    torch.zeros(1, g, g, dtype=torch.uint8)]  # an empty region: no cells
    visual, counts = mllm.visual_embeddings(None, num_tiles, prompt_masks)
    expected, offset = [], 0
    for t, pm in zip(num_tiles, prompt_masks):
        tiles = feats[offset:offset + t]
        offset += t
        expected.append(tiles.flatten(0, 1))
        if pm is not None:
            expected += [tiles[-1][cells.flatten().bool()] for cells in pm]
    assert torch.equal(visual, torch.cat(expected))
    assert counts.tolist() == [2 * n, 0, n + int(prompt_masks[2].sum()), 3 * n + int(prompt_masks[3].sum()), n]
    no_regions, counts = mllm.visual_embeddings(None, num_tiles, [None] * 5)
    assert torch.equal(no_regions, feats.flatten(0, 1)) and counts.tolist() == [t * n for t in num_tiles]


def test_predict_mode_returns_one_mask_per_seg(model):
    batch = collate([seg_sample(model, n_masks=3), caption_sample(model)])
    out = model(batch, mode="predict")
    side = model.grounding_encoder.image_size // 4
    assert out["pred_masks"][0].shape == (3, side, side)
    assert out["pred_masks"][1] is None


def test_multimask_choice_best_iou_or_single_mask_token(model):
    """multimask_output=True keeps the candidate (of 3) the IoU head rates best; False the single-mask token."""
    runner = model.grounding_encoder
    sam = runner.sam2_model
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, runner.image_size, runner.image_size)).float()
    prompts, index = torch.randn(3, runner.hidden_dim), torch.tensor([0, 1, 1])
    with torch.no_grad():
        features = runner.encode_images(images)
        sparse, dense = sam.sam_prompt_encoder(points=(torch.zeros(3, 1, 2), -torch.ones(3, 1, dtype=torch.int32)),
                                               boxes=None, masks=None)
        args = dict(image_embeddings=features["low_res"][index], image_pe=sam.sam_prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=torch.cat([sparse, prompts[:, None]], 1),
                    dense_prompt_embeddings=dense, repeat_image=False,
                    high_res_features=[f[index] for f in features["high_res"]])
        multi, ious, _, _ = sam.sam_mask_decoder(multimask_output=True, **args)  # [3,3,h,w], [3,3]
        single, _, _, _ = sam.sam_mask_decoder(multimask_output=False, **args)  # [3,1,h,w]
        best = runner.decode(features, prompts, index)
        runner.multimask_output = False
        try:
            fixed = runner.decode(features, prompts, index)
        finally:
            runner.multimask_output = True
    assert torch.allclose(best["masks"], multi[torch.arange(3), ious.argmax(-1)])
    assert torch.allclose(fixed["masks"], single[:, 0]) and fixed["ious"].shape == (3, 1)
    assert not torch.allclose(fixed["masks"], best["masks"])


def test_video_sample_frames_are_object_major(tiny_models):
    """frames_per_batch > 1: masks [n_obj*F,H,W] object-major, each frame decoded with the same [SEG] prompt."""
    torch.manual_seed(0)
    m = BUILDER.build(model_config(tiny_models, loss_sample_points=False))
    s = seg_sample(m, n_masks=2)
    size = m.grounding_encoder.image_size
    s["g_pixel_values"] = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)  # 3 frames
    s["masks"] = s["masks"].repeat_interleave(3, dim=0)  # [obj0 f0, obj0 f1, obj0 f2, obj1 f0, ...]
    s["frames_per_batch"] = 3
    prompts, image_index, gt, frames = m._seg_embeddings(collate([s]), torch.randn(1, len(s["input_ids"]), 64))
    assert frames.shape == (3, 3, size, size)
    assert image_index.tolist() == [0, 0, 1, 1, 2, 2]
    side = size // 4
    resized = torch.nn.functional.interpolate(s["masks"][None].float(), size=(side, side), mode="nearest")[0]
    assert torch.equal(gt, resized[[0, 3, 1, 4, 2, 5]])  # frame 0's objects, then frame 1's, ...
    assert torch.equal(prompts[:2], prompts[2:4])
    losses = m(collate([s]), mode="loss")
    assert torch.isfinite(losses["loss_dice"])


def test_gradient_checkpointing_switch(tiny_models):
    cfg = model_config(tiny_models)
    cfg["mllm"]["gradient_checkpointing"] = True
    m = BUILDER.build(cfg)
    assert m.mllm.language_model.is_gradient_checkpointing
    losses = m(collate([seg_sample(m), caption_sample(m)]), mode="loss")
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_whole_model_in_bf16_like_deepspeed(tiny_models):
    """DeepSpeed bf16 casts every parameter and buffer; the forward must still run (SAM2 under autocast)."""
    m = BUILDER.build(model_config(tiny_models)).to(torch.bfloat16)
    batch = collate([seg_sample(m), caption_sample(m)])
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    losses = m(batch, mode="loss")
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_uniform_module_calls_runs_the_encoders_on_placeholders(tiny_models, monkeypatch):
    """ZeRO-3 mode: a batch without masks/images still calls the SAM2 image encoder and the vision tower."""
    m = BUILDER.build(model_config(tiny_models, uniform_module_calls=True))
    calls = []
    enc = m.grounding_encoder.sam2_model.image_encoder
    orig = enc.forward
    monkeypatch.setattr(enc, "forward", lambda *a, **k: calls.append("sam2") or orig(*a, **k))
    losses = m(collate([caption_sample(m)]), mode="loss")
    assert calls == ["sam2"] and losses["loss_mask"].item() == 0.0
    tok = m.tokenizer
    ids = torch.tensor(tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello",
                           add_special_tokens=False).input_ids)
    text = dict(input_ids=ids, labels=ids.clone(), pixel_values=None, g_pixel_values=None, masks=None,
                prompt_masks=None, frames_per_batch=1)
    vis = m.mllm.hf_model.model.vision_tower
    vorig = vis.forward
    monkeypatch.setattr(vis, "forward", lambda *a, **k: calls.append("vit") or vorig(*a, **k))
    losses = m(collate([text]), mode="loss")
    assert "vit" in calls and torch.isfinite(losses["llm_loss"])


def test_frozen_vit_runs_without_grad_even_with_checkpointing(tiny_models):
    """Gradient checkpointing makes transformers' vision embeddings require grad; the frozen ViT must still not
    build a graph (its backward and recomputation would be wasted work), while the projector keeps its gradient."""
    cfg = model_config(tiny_models)
    cfg["mllm"]["gradient_checkpointing"] = True
    m = BUILDER.build(cfg)
    ref = m.mllm.hf_model.model.get_image_features(pixel_values=torch.ones(2, 3, 112, 112))
    ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
    feats = m.mllm.image_features(torch.ones(2, 3, 112, 112))
    assert torch.allclose(feats, ref, atol=1e-6)  # same features as transformers' own path
    assert feats.requires_grad and feats.grad_fn is not None  # projector in the graph
    proj_in = []
    h = m.mllm.hf_model.model.multi_modal_projector.register_forward_pre_hook(lambda mod, a: proj_in.append(a[0]))
    m.mllm.image_features(torch.ones(1, 3, 112, 112))
    h.remove()
    assert not proj_in[0].requires_grad  # nothing upstream of the projector needs a backward


def test_everything_trainable_from_random_init(tmp_path):
    """The learning-proof setting: sized tiny models, every part trainable (ViT, LLM, projector, SAM2 encoder and
    decoder); one mixed batch must send a non-zero gradient to each of them."""
    from sa2va.tiny_models import make_tiny_models

    tiny = make_tiny_models(tmp_path, internvl=dict(image_size=224, vision_hidden=48, text_layers=1),
                            sam2=dict(image_size=128, embed_dim=16))
    cfg = model_config(tiny, lora=False, new_token_training="full")
    cfg["mllm"].update(freeze_llm=False, freeze_visual_encoder=False)
    cfg["grounding_encoder"].update(freeze_image_encoder=False)
    torch.manual_seed(0)
    m = BUILDER.build(cfg)
    assert m.mllm.tile_size == 224 and m.mllm.tokens_per_tile == 64 and m.grounding_encoder.image_size == 128
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    # only the video-memory modules and the (unused) point/mask prompt encoder stay frozen
    assert frozen and all(k in n for n in frozen for k in ("grounding_encoder.",)), frozen[:5]
    assert not [n for n in frozen if any(k in n for k in ("image_encoder", "sam_mask_decoder", "no_mem_embed"))]
    batch = collate([seg_sample(m, n_masks=2), caption_sample(m)], m.tokenizer.pad_token_id)
    sum(m(batch, mode="loss").values()).backward()
    grads = _grads(m)
    for part in ("vision_tower.encoder", "vision_tower.embeddings", "language_model.layers", "lm_head",
                 "embed_tokens", "multi_modal_projector", "image_encoder.trunk", "image_encoder.neck",
                 "sam_mask_decoder.transformer", "text_hidden_fcs"):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if part in n), part


@pytest.mark.slow
def test_compiled_layers_match_eager(tiny_models):
    """compile_layers=True (torch.compile per LLM/ViT layer) keeps parameter names and gives the eager losses and
    gradients."""
    results = []
    for compile_layers in (False, True):
        cfg = model_config(tiny_models)
        cfg["mllm"]["compile_layers"] = compile_layers
        torch.manual_seed(0)
        m = BUILDER.build(cfg)
        batch = collate([seg_sample(m, n_masks=2), caption_sample(m)], m.tokenizer.pad_token_id)
        losses = m(batch, mode="loss")
        sum(losses.values()).backward()
        results.append((losses, _grads(m), sorted(m.state_dict())))
    (l0, g0, k0), (l1, g1, k1) = results
    assert k0 == k1
    for k in l0:
        assert torch.allclose(l0[k], l1[k], atol=1e-4), k
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-4, rtol=1e-3), n


def test_uint8_tiles_give_the_same_losses_as_normalised_tiles(model):
    """The loader's uint8_tiles: the model normalises uint8 pixel_values itself, with identical results."""
    from sa2va.datasets.image_processing import IMAGENET_MEAN, IMAGENET_STD

    batch = collate([seg_sample(model, n_masks=2), caption_sample(model)], model.tokenizer.pad_token_id)
    g = torch.Generator().manual_seed(5)
    raw = torch.randint(0, 256, batch["pixel_values"].shape, dtype=torch.uint8, generator=g)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.manual_seed(0)
    ref = model(dict(batch, pixel_values=(raw.float() / 255 - mean) / std), mode="loss")
    torch.manual_seed(0)
    out = model(dict(batch, pixel_values=raw), mode="loss")
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=0, atol=0)


def test_tiny_internvit_starts_with_sincos_positions(tmp_path):
    """transformers zero-initialises InternViT's position table; the tiny model writes sine-cosine codes so
    that a from-scratch ViT knows where its patches are ("zeros" keeps transformers' init)."""
    from transformers import InternVLForConditionalGeneration

    from sa2va.tiny_models import make_tiny_internvl, sincos_position_grid

    for positions in ("sincos", "zeros"):
        path = make_tiny_internvl(tmp_path / positions, vision_positions=positions)
        table = InternVLForConditionalGeneration.from_pretrained(path).model.vision_tower.embeddings.position_embeddings
        assert table.shape == (1, 1 + 8 * 8, 32)  # 112-px tiles, patch 14
        expected = sincos_position_grid(8, 32) if positions == "sincos" else torch.zeros(64, 32)
        torch.testing.assert_close(table[0, 1:].detach(), expected)
        assert float(table[0, 0].abs().max()) == 0.0
    grid = sincos_position_grid(8, 32)
    # first half codes the column, second half the row: patches in one column share the first half
    torch.testing.assert_close(grid[3, :16], grid[8 * 5 + 3, :16])
    assert not torch.allclose(grid[3, 16:], grid[8 * 5 + 3, 16:])
    with pytest.raises(ValueError, match="vision_positions"):
        make_tiny_internvl(tmp_path / "bad", vision_positions="learned")


def test_a_tied_lm_head_stays_tied_through_new_tokens_and_a_paramwise_optimizer_step(tiny_models, tmp_path):
    """tie_word_embeddings=True (a tiny-model option of the learning-proof sweep): the new special tokens grow the
    one shared matrix, and the learning proof's optimizer (paramwise lr multipliers, merged groups) trains it."""
    from mmengine.optim import build_optim_wrapper

    from sa2va.engine import MergedGroupsOptimWrapperConstructor
    from sa2va.tiny_models import make_tiny_internvl

    tied = dict(tiny_models, internvl=str(make_tiny_internvl(tmp_path / "tied", tie_word_embeddings=True)))
    torch.manual_seed(0)
    model = BUILDER.build(model_config(tied, lora=False, new_token_training="full"))
    embed, head = model.mllm.hf_model.get_input_embeddings().weight, model.mllm.lm_head.weight
    assert head is embed and embed.shape[0] == len(model.tokenizer)  # the [SEG] / region tokens included
    wrapper = build_optim_wrapper(model, dict(
        type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, fused=True),
        paramwise_cfg=dict(custom_keys={"language_model": dict(lr_mult=0.25)}),
        constructor=MergedGroupsOptimWrapperConstructor))
    owners = [g for g in wrapper.optimizer.param_groups if any(p is embed for p in g["params"])]
    assert len(owners) == 1 and owners[0]["lr"] == 2.5e-4
    before = embed.detach().clone()
    losses = model(collate([seg_sample(model), caption_sample(model)], model.tokenizer.pad_token_id), mode="loss")
    wrapper.update_params(sum(losses.values()))
    assert model.mllm.lm_head.weight is model.mllm.hf_model.get_input_embeddings().weight
    assert not torch.equal(before, embed)


def test_prompt_init_gain_scales_the_initial_prompts(tiny_models):
    """prompt_init_gain multiplies text_hidden_fcs' last layer at build: the same seed gives prompts exactly
    gain x larger."""
    torch.manual_seed(0)
    base = BUILDER.build(model_config(tiny_models))
    torch.manual_seed(0)
    scaled = BUILDER.build(model_config(tiny_models, prompt_init_gain=4.0))
    h = torch.randn(3, base.mllm.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(scaled.text_hidden_fcs(h), 4.0 * base.text_hidden_fcs(h))


def test_random_sam2_decoder_reacts_more_to_larger_prompts(tiny_models):
    """The reason for prompt_init_gain: with a randomly initialised SAM2 decoder, the share of the mask logits'
    spread that depends on the prompt grows with the initial prompt size (docs/benchmarks.md, fifth session)."""
    def prompt_dependent_share(gain):
        torch.manual_seed(0)
        m = BUILDER.build(model_config(tiny_models, prompt_init_gain=gain)).eval()
        runner = m.grounding_encoder
        g = torch.Generator().manual_seed(1)
        image = torch.rand(1, 3, runner.image_size, runner.image_size, generator=g)
        d = m.mllm.hidden_size
        # [SEG] states of different questions share most of their direction (pairwise cosine ~0.9 at init)
        common = torch.randn(1, d, generator=g)
        hidden = torch.nn.functional.normalize(common + 0.3 * torch.randn(16, d, generator=g), dim=1) * d ** 0.5
        with torch.no_grad():
            logits = runner.decode(runner.encode_images(image), m.text_hidden_fcs(hidden),
                                   torch.zeros(16, dtype=torch.long))["masks"].flatten(1)  # [16, h*w]
        return float((logits - logits.mean(0)).std() / logits.std())

    low, high = prompt_dependent_share(1.0), prompt_dependent_share(4.0)
    assert low < 0.2 and high > 5 * low, (low, high)


def test_visual_embeddings_errors_name_the_sample(model, monkeypatch):
    mllm = model.mllm
    n, g = mllm.tokens_per_tile, mllm.prompt_grid
    monkeypatch.setattr(mllm, "image_features", lambda pixel_values: torch.zeros(3, n, 8))
    region = torch.ones(1, g, g, dtype=torch.uint8)
    with pytest.raises(ValueError, match="num_tiles sums to 2 but pixel_values holds 3 tiles"):
        mllm.visual_embeddings(None, [1, 1], [None, None])
    with pytest.raises(ValueError, match="batch index 1: prompt_masks grid has 4 cells"):
        mllm.visual_embeddings(None, [2, 1], [None, torch.ones(1, 2, 2, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="batch index 1: 1 regions but no tiles"):
        mllm.visual_embeddings(None, [3, 0], [None, region])


def test_context_token_count_mismatch_names_the_sample(model):
    batch = collate([seg_sample(model), caption_sample(model)])
    batch["prompt_masks"][1] = batch["prompt_masks"][1].clone()
    batch["prompt_masks"][1][0, -1, -1] = 1  # one region cell more than the text has <IMG_CONTEXT> tokens for
    with pytest.raises(ValueError, match=r"batch index 1: \d+ <IMG_CONTEXT> tokens but \d+ visual features"):
        model(batch, mode="loss")


def test_sample_without_objects_adds_no_frame(model):
    empty = seg_sample(model, n_masks=1)
    ids = empty["input_ids"]
    keep = ids != model.seg_token_idx  # the same sample with no [SEG] and no masks
    empty.update(input_ids=ids[keep], labels=empty["labels"][keep], masks=empty["masks"][:0])
    batch = collate([empty, seg_sample(model, n_masks=2)])
    prompts, image_index, gt, frames = model._seg_embeddings(batch, torch.randn(2, batch["input_ids"].shape[1], 64))
    assert frames.shape[0] == 1 and image_index.tolist() == [0, 0] and gt.shape[0] == 2
    assert model._seg_embeddings(collate([empty]), torch.randn(1, len(empty["input_ids"]), 64)) is None


def test_right_padded_batch_runs_causal_attention_without_the_padding_mask(model, monkeypatch):
    """The padding mask is dropped for right-padded rows: SDPA gets is_causal and no mask, and every real
    token's state, the LM loss and the mask losses are those of the masked run."""
    import transformers.integrations.sdpa_attention as sdpa

    batch = collate([seg_sample(model, n_masks=2), caption_sample(model, tiles=1)], model.tokenizer.pad_token_id)
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] != lengths[1], "the test needs a padded row"
    calls = []
    real_sdpa = sdpa.torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(query, *args, **kwargs):
        if query.shape[-2] == batch["input_ids"].shape[1]:  # the LLM's calls (the ViT and SAM2 use SDPA too)
            calls.append((kwargs.get("attn_mask") is None, kwargs.get("is_causal")))
        return real_sdpa(query, *args, **kwargs)

    monkeypatch.setattr(sdpa.torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    results = {}
    for right_padded in (False, True):
        monkeypatch.setattr(model.mllm, "right_padded", right_padded)
        calls.clear()
        torch.manual_seed(0)
        with torch.no_grad():
            hidden = model.mllm(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids",
                                                         "pixel_values", "num_tiles", "prompt_masks", "labels")})
            torch.manual_seed(0)
            losses = model(batch, mode="loss")
        results[right_padded] = (hidden, losses, set(calls))
    assert results[False][2] == {(False, False)}  # the masked kernel over the full matrix
    assert results[True][2] == {(True, True)}     # causal attention, no mask
    real = batch["attention_mask"]
    torch.testing.assert_close(results[True][0]["hidden_states"][real], results[False][0]["hidden_states"][real])
    torch.testing.assert_close(results[True][0]["loss"], results[False][0]["loss"])
    for k in ("llm_loss", "loss_mask", "loss_dice"):
        torch.testing.assert_close(results[True][1][k], results[False][1][k])
    # the pad rows (never used) are what differs
    pad = ~real
    assert not torch.allclose(results[True][0]["hidden_states"][pad], results[False][0]["hidden_states"][pad])


def test_left_padded_mask_is_refused_when_the_model_expects_right_padding(model):
    batch = collate([seg_sample(model, n_masks=1), caption_sample(model, tiles=1)], model.tokenizer.pad_token_id)
    left = batch["attention_mask"].flip(1)  # the shorter row now starts with pads
    with pytest.raises(ValueError, match=r"rows \[\d\] have a real token after a pad"):
        model.mllm(input_ids=batch["input_ids"], attention_mask=left, position_ids=batch["position_ids"],
                   pixel_values=batch["pixel_values"], num_tiles=batch["num_tiles"], prompt_masks=batch["prompt_masks"])


def test_seg_grad_to_llm_scales_only_the_mask_gradient_into_the_llm(model):
    """seg_grad_to_llm multiplies what the mask losses send into the LLM through the [SEG] states (0: none), while
    text_hidden_fcs and the SAM2 decoder get the same gradient and the losses are unchanged."""
    batch = collate([seg_sample(model, n_masks=2)], model.tokenizer.pad_token_id)

    def mask_grads(scale):
        model.seg_grad_to_llm = scale
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same uncertainty-sampled points
        losses = model(batch, mode="loss")
        (losses["loss_mask"] + losses["loss_dice"]).backward()
        return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    try:
        full_losses, full = mask_grads(1.0)
        half_losses, half = mask_grads(0.5)
        none_losses, none = mask_grads(0.0)
    finally:
        model.seg_grad_to_llm = 1.0
    for k in ("loss_mask", "loss_dice"):
        assert torch.equal(full_losses[k], half_losses[k]) and torch.equal(full_losses[k], none_losses[k]), k
    after = [n for n in full if n.startswith(("text_hidden_fcs", "grounding_encoder"))]
    before = [n for n in full if n not in after]  # the LLM's LoRA / new-token rows and the projector
    assert after and any("lora_B" in n for n in before) and any("multi_modal_projector" in n for n in before)
    for n in after:
        torch.testing.assert_close(half[n], full[n])
        torch.testing.assert_close(none[n], full[n])
    assert any(full[n].abs().sum() > 0 for n in before)
    for n in before:
        torch.testing.assert_close(half[n], 0.5 * full[n])
    assert not set(before) & set(none), "detached [SEG] states: no mask gradient reaches the LLM's side"


def test_negative_seg_grad_to_llm_is_refused(tiny_models):
    with pytest.raises(ValueError, match="seg_grad_to_llm must be >= 0"):
        BUILDER.build(model_config(tiny_models, seg_grad_to_llm=-1.0))
