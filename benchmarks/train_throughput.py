"""Training-step throughput of real Sa2VA shapes with random weights (no downloads).

    python benchmarks/train_throughput.py --shape 1b --variants baseline optimized --batches refcoco mix caption
    python benchmarks/train_throughput.py --shape 4b --variants optimized --micro-batch 1

Shapes (DESIGN.md section 5): InternViT-300M-448px + Qwen2.5-0.5B (1b) or Qwen2.5-3B (4b), vocab 151674, SAM2
Hiera-L at 1024. Batches are RefCOCO-like (640x480 -> 13 tiles = 3328 image tokens, 5 masks, 5 Q/A turns),
mask-caption-like (13 tiles + 2 regions of ~40 cells, one caption) and a 50/50 mix.

Variants (run side by side in one process):
  baseline   the original's settings: whole embedding + lm_head trained, full [B,L,V] logits for the LM loss,
             gradient checkpointing on
  optimized  new-token rows only (peft trainable_token_indices), LM head only at supervised positions,
             gradient checkpointing off where memory allows (``--ckpt`` to force it on)
  compiled   optimized + torch.compile of every LLM decoder layer and ViT layer (``compile_layers=True``)
The optimized and compiled variants run the LLM's attention causal-only on the right-padded rows (flash kernel,
``right_padded=True``); ``--keep-padding-mask`` hands them the padding mask as the baseline does (masked kernel).

Per variant: samples/s, tokens/s, step split (ViT fwd / SAM2 encoder fwd / optimizer, each timed alone; the rest =
LLM fwd+bwd + decoder + losses), peak memory, and MFU = model FLOPs / (step time x 786 TFLOP/s) where model FLOPs
are counted by torch's FlopCounterMode on one step without activation recomputation, each sample at its own length,
the LLM's causal attention as the full [L, L] matrix (as PaLM's model-FLOPs formula does). ``mfu_causal_half``
counts that attention at half (the triangle a causal kernel computes; ``llm_attention_tflop`` is the full part).
Writes a JSON line per result to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects"))

PEAK_TFLOPS = 786.0  # dense bf16 matmul measured on one H100 (DESIGN.md section 5)
LLM_SHAPES = {
    "1b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
               intermediate_size=4864),
    "4b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
               intermediate_size=11008),
}
VOCAB = 151674


def write_model_dir(shape: str, root: str) -> str:
    """config.json of the real shape + a (small) tokenizer carrying the special tokens."""
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    from sa2va.tiny_models import IMG_CONTEXT_TOKEN, make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    path = os.path.join(root, f"sa2va_{shape}_random")
    text = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False,
                       rms_norm_eps=1e-6, **LLM_SHAPES[shape])
    config = InternVLConfig(vision_config=InternVLVisionConfig(), text_config=text,
                            image_token_id=tok.convert_tokens_to_ids(IMG_CONTEXT_TOKEN), tie_word_embeddings=False)
    config.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_model(path: str, variant: str, ckpt: bool, keep_padding_mask: bool = False):
    from peft import LoraConfig

    from sa2va.models import CrossEntropyLoss, DiceLoss, InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel

    baseline = variant == "baseline"
    mllm = InternVLMLLM(path, torch_dtype="bfloat16", random_init=True,
                        llm_lora=LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05, bias="none"),
                        new_token_training="full" if baseline else "rows",
                        gradient_checkpointing=ckpt, loss_on_supervised_only=not baseline,
                        compile_layers=variant == "compiled",
                        right_padded=not (baseline or keep_padding_mask))
    sam = SAM2TrainRunner("sam2_hiera_l.yaml", ckpt_path=None)
    model = VideoLLaVASAMModel(
        mllm=mllm, grounding_encoder=sam,
        loss_mask=CrossEntropyLoss(use_sigmoid=True, loss_weight=2.0),
        loss_dice=DiceLoss(use_sigmoid=True, activate=True, naive_dice=True, eps=1.0, loss_weight=0.5))
    return model.cuda()


def make_sample(model, kind: str, g: torch.Generator, uint8_tiles: bool = False) -> dict:
    """A sample in the dataset item layout, with RefCOCO-like or mask-caption-like token counts (tiles as
    normalised floats, or as uint8 pixels that the model normalises, as with the configs' ``uint8_tiles``)."""
    m = model.mllm
    ctx, seg = m.img_context_token_id, model.seg_token_idx
    tiles = 13
    ids = [m.tokenizer.convert_tokens_to_ids("<img>")] + [ctx] * (tiles * m.tokens_per_tile) + [
        m.tokenizer.convert_tokens_to_ids("</img>")]

    def words(n):
        return torch.randint(100, 500, (n,), generator=g).tolist()

    labels = [-100] * len(ids)
    pixels = torch.randint(0, 256, (tiles, 3, 448, 448), dtype=torch.uint8, generator=g) if uint8_tiles else \
        torch.randn(tiles, 3, 448, 448, generator=g)
    sample = dict(pixel_values=pixels, frames_per_batch=1)
    if kind == "refcoco":
        for _ in range(5):  # 5 question/answer turns, one [SEG] each (~3.5 k tokens in all)
            q, a = words(24), words(4) + [seg] + words(2)
            ids += q + a
            labels += [-100] * len(q) + a
        masks = torch.zeros(5, 480, 640, dtype=torch.uint8)
        for k in range(5):
            masks[k, 40 * k:40 * k + 150, 60 * k:60 * k + 200] = 1
        sample.update(g_pixel_values=torch.randint(0, 256, (3, 1024, 1024), dtype=torch.uint8, generator=g),
                      masks=masks, prompt_masks=None)
    else:  # mask captioning: 2 regions on the thumbnail grid, one detailed caption
        pm = torch.zeros(2, 16, 16, dtype=torch.uint8)
        pm[0, 2:8, 2:9] = 1  # 42 cells
        pm[1, 9:14, 6:14] = 1  # 40 cells
        region = words(12)
        for r in range(2):
            region += [m.tokenizer.convert_tokens_to_ids("<vp>")] + [ctx] * int(pm[r].sum()) + [
                m.tokenizer.convert_tokens_to_ids("</vp>")] + words(2)
        q, a = words(30), words(90)
        ids += region + q + a
        labels += [-100] * (len(region) + len(q)) + a
        sample.update(g_pixel_values=None, masks=None, prompt_masks=pm)
    sample.update(input_ids=torch.tensor(ids), labels=torch.tensor(labels))
    return sample


def make_batch(model, batch: str, micro_batch: int, g, uint8_tiles: bool = False):
    from sa2va.datasets.collate import sa2va_collate_fn

    kinds = {"refcoco": ["refcoco"], "caption": ["caption"], "mix": ["refcoco", "caption"]}[batch]
    samples = [make_sample(model, kinds[i % len(kinds)], g, uint8_tiles) for i in range(micro_batch)]
    data = sa2va_collate_fn(samples)["data"]

    def to_cuda(x):
        if torch.is_tensor(x):
            return x.cuda(non_blocking=True)
        if isinstance(x, list):
            return [to_cuda(v) for v in x]
        return x

    return {k: to_cuda(v) for k, v in data.items()}


def cuda_time(fn, reps: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / reps


def split_batch(data: dict) -> list[dict]:
    """One single-sample batch per sample (FLOPs are additive; counting one at a time bounds the memory of the
    eager attention the counter needs)."""
    n = data["input_ids"].shape[0]
    offsets = [0]
    for t in data["num_tiles"]:
        offsets.append(offsets[-1] + t)
    out = []
    for i in range(n):
        length = int(data["attention_mask"][i].sum())
        d = {k: (v[i:i + 1, :length] if torch.is_tensor(v) and v.dim() == 2 else [v[i]] if isinstance(v, list) else v)
             for k, v in data.items() if k != "pixel_values"}
        d["pixel_values"] = data["pixel_values"][offsets[i]:offsets[i + 1]]
        out.append(d)
    return out


def count_flops(model, data) -> tuple[float, float]:
    """Model FLOPs of one training step (fwd + bwd, no recomputation), and the part of them in the LLM's
    attention matmuls (``QK^T`` and ``AV``, fwd + bwd), which counts the full ``[L, L]`` matrix per sample."""
    import re

    from torch.utils.flop_counter import FlopCounterMode

    lm = model.mllm.language_model
    ckpt = lm.is_gradient_checkpointing
    if ckpt:
        lm.gradient_checkpointing_disable()
    # FlopCounterMode cannot size SDPA with grouped KV heads: count the LLM's attention as eager matmuls (the same
    # full-matrix FLOPs its SDPA formula would count)
    attn = lm.config._attn_implementation
    lm.config._attn_implementation = "eager"
    total = attention = 0.0
    llm_attention = re.compile(r"language_model\.layers\.\d+\.self_attn$")
    stance = torch.compiler.set_stance("force_eager")  # compiled layers count as their eager code
    stance.__enter__()
    try:
        for sample in split_batch(data):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                with FlopCounterMode(display=False) as forward:
                    losses = model(sample, mode="loss")
                with FlopCounterMode(display=False) as backward:
                    sum(losses.values()).backward()
            model.zero_grad(set_to_none=True)
            total += forward.get_total_flops() + backward.get_total_flops()
            # The attention is read from the forward pass only, x3 for fwd + bwd (a matmul's backward is two
            # matmuls of its size). The per-module rows of a backward pass are best-effort in torch: on the GPU
            # image's torch 2.11 they credited each layer's backward matmuls to about half of all 24 layers
            # (106.5 "attention" TFLOP in a 92.1-TFLOP step, eighteenth session).
            attention += 3 * sum(counts.get(torch.ops.aten.bmm, 0)
                                 for name, counts in forward.get_flop_counts().items() if llm_attention.search(name))
            del losses
            torch.cuda.empty_cache()
    finally:
        stance.__exit__(None, None, None)
        lm.config._attn_implementation = attn
    if ckpt:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return float(total), float(attention)


def bench(model, variant, batch, micro_batch, ckpt, steps, warmup, uint8_tiles=False):
    torch.manual_seed(0)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05, fused=True)
    g = torch.Generator().manual_seed(0)
    data = make_batch(model, batch, micro_batch, g, uint8_tiles)
    tokens = int(data["attention_mask"].sum())

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses = model(data, mode="loss")
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup + (3 if variant == "compiled" else 0)):  # compiled: first steps compile
        step()
    torch.cuda.synchronize()
    t_step = cuda_time(step, steps)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30

    # components timed alone (forward only: the ViT and SAM2 encoder are frozen)
    pv = data["pixel_values"]
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.mllm.image_features(pv)  # warm-up
        t_vit = cuda_time(lambda: model.mllm.image_features(pv), 3)
        g_imgs = [x for x in data["g_pixel_values"] if x is not None]
        t_sam = cuda_time(lambda: model.grounding_encoder.encode_images(torch.stack(g_imgs)), 3) if g_imgs else 0.0
    for p in params:  # realistic optimizer timing needs gradients
        p.grad = torch.zeros_like(p)
    t_opt = cuda_time(opt.step, 3)
    opt.zero_grad(set_to_none=True)
    opt = None  # free the optimizer state before counting FLOPs
    torch.cuda.empty_cache()
    flops, attention_flops = count_flops(model, data)
    data = None
    torch.cuda.empty_cache()
    return dict(variant=variant, batch=batch, micro_batch=micro_batch, grad_ckpt=ckpt, uint8_tiles=uint8_tiles,
                tokens=tokens, trainable_params_M=round(n_trainable / 1e6, 1), step_s=round(t_step, 4),
                samples_per_s=round(micro_batch / t_step, 3), tokens_per_s=round(tokens / t_step, 1),
                vit_fwd_s=round(t_vit, 4), sam2_encoder_fwd_s=round(t_sam, 4), optimizer_s=round(t_opt, 4),
                llm_decoder_loss_s=round(t_step - t_vit - t_sam - t_opt, 4),
                model_tflop=round(flops / 1e12, 2), mfu=round(flops / t_step / (PEAK_TFLOPS * 1e12), 4),
                llm_attention_tflop=round(attention_flops / 1e12, 2),
                mfu_causal_half=round((flops - attention_flops / 2) / t_step / (PEAK_TFLOPS * 1e12), 4),
                peak_mem_gib=round(peak, 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(LLM_SHAPES), default="1b")
    p.add_argument("--variants", nargs="+", default=["baseline", "optimized"])
    p.add_argument("--batches", nargs="+", default=["refcoco", "mix", "caption"])
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--ckpt", choices=["auto", "on", "off"], default="auto",
                   help="gradient checkpointing (auto: on for baseline, off for optimized)")
    p.add_argument("--uint8-tiles", action="store_true",
                   help="uint8 tiles normalised by the model (the shipped configs' uint8_tiles=True)")
    p.add_argument("--keep-padding-mask", action="store_true",
                   help="optimized/compiled: pass the padding mask to the LLM (right_padded=False), as before")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="train_throughput.jsonl")
    args = p.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    with tempfile.TemporaryDirectory() as root:
        path = write_model_dir(args.shape, root)
        for variant in args.variants:
            if variant not in ("baseline", "optimized", "compiled"):
                raise SystemExit(f"unknown variant {variant!r}")
            ckpt = {"on": True, "off": False}.get(args.ckpt, variant == "baseline")
            model = build_model(path, variant, ckpt, args.keep_padding_mask)
            for batch in args.batches:
                t0 = time.time()
                try:
                    r = bench(model, variant, batch, args.micro_batch, ckpt, args.steps, args.warmup, args.uint8_tiles)
                except torch.cuda.OutOfMemoryError:
                    r = dict(variant=variant, batch=batch, micro_batch=args.micro_batch, grad_ckpt=ckpt, oom=True)
                    model.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                r.update(shape=args.shape, padding_mask=not model.mllm.right_padded,
                         device=torch.cuda.get_device_name(), wall_s=round(time.time() - t0, 1))
                print(json.dumps(r), flush=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
            del model
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
