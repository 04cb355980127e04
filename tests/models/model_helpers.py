"""Hand-built batches in the layout of docs/batch_layout.md, for model tests."""
import torch
from peft import LoraConfig

from sa2va.models import CrossEntropyLoss, DiceLoss, InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel


def model_config(tiny, lora=True, new_token_training="rows", **kwargs):
    return dict(
        type=VideoLLaVASAMModel,
        mllm=dict(type=InternVLMLLM, model_path=tiny["internvl"], torch_dtype="float32",
                  llm_lora=dict(type=LoraConfig, r=8, lora_alpha=16, lora_dropout=0.0, bias="none") if lora else None,
                  new_token_training=new_token_training),
        grounding_encoder=dict(type=SAM2TrainRunner, cfg_path=tiny["sam2_cfg"], ckpt_path=tiny["sam2_ckpt"]),
        loss_mask=dict(type=CrossEntropyLoss, use_sigmoid=True, reduction="mean", loss_weight=2.0),
        loss_dice=dict(type=DiceLoss, use_sigmoid=True, activate=True, reduction="mean", naive_dice=True, eps=1.0,
                       loss_weight=0.5),
        **kwargs,
    )


def _encode(tok, prompt, answer):
    p = tok(prompt, add_special_tokens=False).input_ids
    a = tok(answer, add_special_tokens=False).input_ids
    return torch.tensor(p + a), torch.tensor([-100] * len(p) + a)


def seg_sample(model, n_masks=2, tiles=1, hw=(60, 80), seed=0):
    """A referring-segmentation sample with ``n_masks`` [SEG] tokens and masks."""
    g = torch.Generator().manual_seed(seed)
    tok, m = model.tokenizer, model.mllm
    img = "<img>" + "<IMG_CONTEXT>" * (m.tokens_per_tile * tiles) + "</img>"
    prompt = f"<|im_start|>user\n{img}\nPlease segment the red circle.<|im_end|>\n<|im_start|>assistant\n"
    answer = "Sure, " + " and ".join(["[SEG]"] * n_masks) + ".<|im_end|>"
    ids, labels = _encode(tok, prompt, answer)
    masks = torch.zeros(n_masks, *hw, dtype=torch.uint8)
    for k in range(n_masks):  # a rectangle per object
        y0, x0 = 5 + 10 * k, 8 + 15 * k
        masks[k, y0:y0 + 20, x0:x0 + 25] = 1
    size = model.grounding_encoder.image_size
    return dict(input_ids=ids, labels=labels,
                pixel_values=torch.randn(tiles, 3, m.tile_size, m.tile_size, generator=g),
                g_pixel_values=torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g),
                masks=masks, prompt_masks=None, frames_per_batch=1)


def caption_sample(model, tiles=2, cells=(0, 1, 5, 6, 10), seed=1):
    """A mask-captioning sample: one region on the thumbnail grid, caption supervised."""
    g = torch.Generator().manual_seed(seed)
    tok, m = model.tokenizer, model.mllm
    pm = torch.zeros(1, m.prompt_grid * m.prompt_grid, dtype=torch.uint8)
    pm[0, list(cells)] = 1
    pm = pm.view(1, m.prompt_grid, m.prompt_grid)
    img = "<img>" + "<IMG_CONTEXT>" * (m.tokens_per_tile * tiles) + "</img>"
    region = "There are 1 part regions in the picture: region1<vp>" + "<IMG_CONTEXT>" * len(cells) + "</vp>.\n"
    prompt = f"<|im_start|>user\n{img}\n{region}Describe region1.<|im_end|>\n<|im_start|>assistant\n"
    ids, labels = _encode(tok, prompt, "the red circle on the left.<|im_end|>")
    return dict(input_ids=ids, labels=labels,
                pixel_values=torch.randn(tiles, 3, m.tile_size, m.tile_size, generator=g),
                g_pixel_values=None, masks=None, prompt_masks=pm, frames_per_batch=1)


def collate(samples, pad_id=0):
    """Minimal collate in the documented batch layout (the real one lives in sa2va.datasets.collate)."""
    L = max(len(s["input_ids"]) for s in samples)
    B = len(samples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    attn = torch.zeros(B, L, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n], labels[i, :n], attn[i, :n] = s["input_ids"], s["labels"], True
    pv = [s["pixel_values"] for s in samples if s["pixel_values"] is not None]
    return dict(input_ids=ids, labels=labels, attention_mask=attn, position_ids=torch.arange(L).expand(B, L).clone(),
                pixel_values=torch.cat(pv) if pv else None,
                num_tiles=[0 if s["pixel_values"] is None else s["pixel_values"].shape[0] for s in samples],
                g_pixel_values=[s["g_pixel_values"] for s in samples], masks=[s["masks"] for s in samples],
                prompt_masks=[s["prompt_masks"] for s in samples],
                frames_per_batch=[s["frames_per_batch"] for s in samples])
