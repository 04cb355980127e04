"""InternVL multimodal LLM (the ``mllm`` of Sa2VA) on top of native transformers.

Loads an InternVL checkpoint directory in the transformers layout (``InternVLForConditionalGeneration``),
adds Sa2VA's special tokens to the one shared tokenizer (:func:`sa2va.tokenizer.build_tokenizer`), resizes the
embeddings, freezes what the config says, and applies LoRA with peft to the language model.

Forward: tiles -> InternViT -> pixel shuffle + projector -> ``tokens_per_tile`` features per tile, scattered in
order into the ``<IMG_CONTEXT>`` positions. Mask-captioning samples also carry ``prompt_masks`` on the thumbnail's
token grid: after the image tokens, region r consumes the thumbnail features at the cells where its mask is set
(row-major), inside ``<vp> ... </vp>``.
"""
from __future__ import annotations

import itertools
import os
import re

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from ..datasets.image_processing import normalize_tiles
from ..tokenizer import DEFAULT_SPECIAL_TOKENS, IMG_CONTEXT_TOKEN, build_tokenizer

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32}


def _as_dtype(dtype):
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    return _DTYPES[dtype]


def linear_leaf_names(module: nn.Module, exclude: tuple[str, ...] = ("lm_head", "output_layer")) -> list[str]:
    """Leaf names of every ``nn.Linear`` inside ``module`` (``q_proj``, ``gate_proj``, ...), except the heads."""
    names = {name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    return sorted(n for n in names if n not in exclude)


class InternVLMLLM(nn.Module):
    """InternVL wrapper used as ``VideoLLaVASAMModel.mllm``.

    Args:
        model_path: InternVL directory in the transformers layout (``*-hf`` checkpoints, or our tiny model).
        special_tokens: added to the tokenizer once, in order; embeddings are resized to ``len(tokenizer)``.
        torch_dtype: dtype of the loaded weights (``'bfloat16'``, ``'float32'``, ``'auto'``).
        attn_implementation: ``'sdpa'`` (default), ``'eager'``, ``'flash_attention_2'``, ...
        freeze_llm / freeze_visual_encoder / freeze_projector: what stays frozen (the projector trains by default).
        llm_lora: a peft ``LoraConfig`` (or its config dict) applied to every linear layer of the language model
            except the head when ``target_modules`` is not given.
        new_token_training: how the added special tokens learn. ``'rows'`` trains only their embedding and
            lm_head rows (peft ``trainable_token_indices``); ``'full'`` trains the whole embedding and lm_head
            (the original Sa2VA behaviour); ``'none'`` keeps them frozen.
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant).
        random_init: build from ``config.json`` alone with random weights (benchmarks of real shapes).
        loss_on_supervised_only: apply the LM head only at supervised positions (default); ``False`` computes
            the full ``[B, L, vocab]`` logits first, as the original did (kept for benchmarks).
        compile_layers: ``torch.compile`` every LLM decoder layer and ViT encoder layer in place (dynamic shapes;
            parameter names and checkpoints are unchanged). The first steps of each new shape family compile.
        right_padded: ``forward`` gets right-padded rows (as ``sa2va_collate_fn`` builds them), so the padding
            mask is not handed to the LLM: under the causal mask no real token can attend to a pad that comes
            after it, and only the unused pad rows' outputs change. SDPA then runs its causal flash kernel
            instead of a masked kernel over the full ``[L, L]`` matrix. The layout is checked on every CPU mask
            and on the first mask on an accelerator (one host sync); set ``False`` for other paddings.
    """

    def __init__(self, model_path: str | os.PathLike, special_tokens=DEFAULT_SPECIAL_TOKENS,
                 torch_dtype="bfloat16", attn_implementation: str = "sdpa", freeze_llm: bool = True,
                 freeze_visual_encoder: bool = True, freeze_projector: bool = False, llm_lora=None,
                 new_token_training: str = "rows", gradient_checkpointing: bool = False,
                 random_init: bool = False, loss_on_supervised_only: bool = True, compile_layers: bool = False,
                 right_padded: bool = True):
        super().__init__()
        self.right_padded = right_padded
        self._padding_checked_on_device = False
        from transformers import InternVLForConditionalGeneration

        if new_token_training not in ("rows", "full", "none"):
            raise ValueError(f"new_token_training must be 'rows', 'full' or 'none', got '{new_token_training}'")
        logger = MMLogger.get_current_instance()
        self.model_path = os.fspath(model_path)
        self.tokenizer = build_tokenizer(self.model_path, tuple(special_tokens))
        self.special_tokens = tuple(special_tokens)
        from ..hf.import_internvl import is_original_internvl, load_original_internvl

        if random_init:  # real shapes, random weights (benchmarks): config.json only
            from transformers import AutoConfig

            model = InternVLForConditionalGeneration._from_config(
                AutoConfig.from_pretrained(self.model_path), dtype=_as_dtype(torch_dtype),
                attn_implementation=attn_implementation)
        elif is_original_internvl(self.model_path):  # remote-code layout (InternVL2.5/3, Sa2VA HF): convert on load
            model = load_original_internvl(self.model_path, self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN),
                                           dtype=_as_dtype(torch_dtype), attn_implementation=attn_implementation)
        else:
            model = InternVLForConditionalGeneration.from_pretrained(
                self.model_path, dtype=_as_dtype(torch_dtype), attn_implementation=attn_implementation)
        self.loss_on_supervised_only = loss_on_supervised_only
        old_vocab = model.get_input_embeddings().weight.shape[0]
        if len(self.tokenizer) > old_vocab:
            self._resize_embeddings(model, len(self.tokenizer))
            logger.info(f"resized token embeddings {old_vocab} -> {len(self.tokenizer)} for {list(special_tokens)}")
        self.img_context_token_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
        if model.config.image_token_id != self.img_context_token_id:
            raise ValueError(f"{self.model_path}: config.image_token_id={model.config.image_token_id} but the "
                             f"tokenizer maps {IMG_CONTEXT_TOKEN} to {self.img_context_token_id}")
        self.new_token_ids = self.tokenizer.convert_tokens_to_ids(list(special_tokens))

        model.requires_grad_(False)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if llm_lora is not None or new_token_training == "rows":
            model = self._apply_peft(model, llm_lora, new_token_training)
        self.model = model
        base = self.hf_model
        base.model.multi_modal_projector.requires_grad_(not freeze_projector)
        base.model.vision_tower.requires_grad_(not freeze_visual_encoder)
        if not freeze_llm:
            if llm_lora is not None:
                raise ValueError("freeze_llm=False together with llm_lora: choose LoRA or full LLM training")
            base.model.language_model.requires_grad_(True)
            base.lm_head.requires_grad_(True)
        if new_token_training == "full":
            base.get_input_embeddings().weight.requires_grad_(True)
            base.lm_head.weight.requires_grad_(True)

        vcfg = base.config.vision_config
        patch = vcfg.patch_size[0] if isinstance(vcfg.patch_size, (list, tuple)) else vcfg.patch_size
        tile = vcfg.image_size[0] if isinstance(vcfg.image_size, (list, tuple)) else vcfg.image_size
        self.tile_size = int(tile)
        self.prompt_grid = int(tile // patch * base.config.downsample_ratio)  # 16 for 448-px tiles
        self.tokens_per_tile = self.prompt_grid ** 2  # 256 for 448-px tiles
        self.hidden_size = base.config.text_config.hidden_size
        if compile_layers:
            self._compile_layers(base)

    @staticmethod
    def _compile_layers(base) -> None:
        """Compile each repeated block (not the whole model: the glue between blocks changes with the batch's
        mix of images, regions and masks, the blocks do not)."""
        layers = list(base.model.language_model.layers) + list(base.model.vision_tower.encoder.layer)
        for layer in layers:
            layer.compile(dynamic=True)
        MMLogger.get_current_instance().info(f"torch.compile: {len(layers)} LLM/ViT layers (dynamic shapes)")

    # -- construction helpers -------------------------------------------------------------------------------
    @staticmethod
    def _resize_embeddings(model, new_size: int) -> None:
        """Grow embedding and head to ``new_size``; new rows start at the mean of the old rows (deterministic,
        unlike transformers' sampled mean-resizing, so two builds from one checkpoint are identical)."""
        old_size = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(new_size, mean_resizing=False)
        with torch.no_grad():
            for weight in {id(w): w for w in (model.get_input_embeddings().weight, model.lm_head.weight)}.values():
                weight[old_size:] = weight[:old_size].mean(0, keepdim=True)

    def _apply_peft(self, model, llm_lora, new_token_training):
        from peft import LoraConfig, TrainableTokensConfig, get_peft_model

        embed = model.get_input_embeddings()
        tied = model.lm_head.weight.data_ptr() == embed.weight.data_ptr()
        token_targets = None
        if new_token_training == "rows":
            # tied heads follow the embedding automatically; untied ones need their own rows
            token_targets = {"embed_tokens": list(self.new_token_ids)}
            if not tied:
                token_targets["lm_head"] = list(self.new_token_ids)
        if llm_lora is None:  # new-token rows only, no LoRA
            return get_peft_model(model, TrainableTokensConfig(target_modules=list(token_targets),
                                                               token_indices=list(self.new_token_ids)))
        if isinstance(llm_lora, dict):
            llm_lora = LoraConfig(**{k: v for k, v in llm_lora.items() if k != "type"})
        if llm_lora.task_type not in (None, "FEATURE_EXTRACTION"):
            MMLogger.get_current_instance().warning(
                f"llm_lora.task_type={llm_lora.task_type} ignored: LoRA is applied to the InternVL language model")
            llm_lora.task_type = None
        if llm_lora.target_modules is None:
            names = linear_leaf_names(model.model.language_model)
            llm_lora.target_modules = rf"^model\.language_model\..*\.({'|'.join(map(re.escape, names))})$"
        if token_targets is not None:
            llm_lora.trainable_token_indices = token_targets
        return get_peft_model(model, llm_lora)

    @property
    def hf_model(self):
        """The ``InternVLForConditionalGeneration`` (inside the peft wrapper when LoRA is on)."""
        from peft import PeftModel

        return self.model.base_model.model if isinstance(self.model, PeftModel) else self.model

    @property
    def language_model(self) -> nn.Module:
        return self.hf_model.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self.hf_model.lm_head

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf_model.get_input_embeddings()(input_ids)

    # -- vision -----------------------------------------------------------------------------------------------
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """tiles [T,3,s,s] (normalised float, or uint8 pixels normalised here) -> features [T, tokens_per_tile, D].

        A frozen InternViT runs under ``no_grad``: with gradient checkpointing on, transformers makes the vision
        embeddings require grad, which would otherwise run (and recompute) the whole ViT backward for nothing.
        """
        base = self.hf_model.model
        cfg = base.config
        frozen = not any(p.requires_grad for p in base.vision_tower.parameters())
        if pixel_values.dtype == torch.uint8:  # the loader's uint8_tiles
            pixel_values = normalize_tiles(pixel_values)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            out = base.vision_tower(pixel_values=pixel_values.to(base.dtype), return_dict=True,
                                    output_hidden_states=cfg.vision_feature_layer != -1)
            x = out.last_hidden_state if cfg.vision_feature_layer == -1 else out.hidden_states[cfg.vision_feature_layer]
            if cfg.vision_feature_select_strategy == "default":
                x = x[:, 1:]  # drop CLS
            side = int(x.shape[1] ** 0.5)
            x = base.pixel_shuffle(x.reshape(x.shape[0], side, side, -1), scale_factor=cfg.downsample_ratio)
            x = x.reshape(x.shape[0], -1, x.shape[-1])  # [T, tokens_per_tile, C*4]
        return base.multi_modal_projector(x)  # [T, tokens_per_tile, D]

    def visual_embeddings(self, pixel_values, num_tiles, prompt_masks) -> tuple[torch.Tensor, torch.Tensor]:
        """The features that fill the batch's ``<IMG_CONTEXT>`` positions, in order: per sample all its tiles'
        tokens, then for each region the thumbnail (last tile) tokens at the region's cells (row-major).

        Returns (features [sum_i n_i, D], counts n_i [B] on the features' device). One gather for the whole batch,
        the region cells found with one ``nonzero``: a per-sample loop cost the host ~10 ops and one device sync
        per sample (``benchmarks/step_ops.py``).
        """
        feats = self.image_features(pixel_values)  # [sum T, n, D]
        n = feats.shape[1]
        if sum(num_tiles) != feats.shape[0]:
            raise ValueError(f"num_tiles sums to {sum(num_tiles)} but pixel_values holds {feats.shape[0]} tiles")
        flat = feats.flatten(0, 1)  # [sum T * n, D]: the tiles' tokens, sample by sample
        device = flat.device
        counts = [t * n for t in num_tiles]
        with_regions = [i for i, m in enumerate(prompt_masks or []) if m is not None]
        if not with_regions:
            return flat, torch.tensor(counts, device=device)
        tile_end = list(itertools.accumulate(num_tiles))  # one past each sample's last tile
        cells, thumb_start, region_sample = [], [], []
        for i in with_regions:
            grid = prompt_masks[i].flatten(1)  # [R_i, g*g]
            if grid.shape[1] != n:
                raise ValueError(f"batch index {i}: prompt_masks grid has {grid.shape[1]} cells but a tile has "
                                 f"{n} tokens ({self.prompt_grid}x{self.prompt_grid} expected)")
            if num_tiles[i] == 0:
                raise ValueError(f"batch index {i}: {grid.shape[0]} regions but no tiles")
            cells.append(grid)
            thumb_start += [(tile_end[i] - 1) * n] * grid.shape[0]
            region_sample += [i] * grid.shape[0]
        region, cell = torch.cat(cells).bool().nonzero(as_tuple=True)  # region-major, cells row-major (1 sync)
        region_rows = torch.tensor(thumb_start, device=device)[region] + cell  # [sum cells] rows of flat
        region_owner = torch.tensor(region_sample, device=device)[region]  # [sum cells] sample of each
        tile_owner = torch.arange(len(num_tiles)).repeat_interleave(torch.tensor(counts)).to(device)
        # by sample; within a sample its tiles first (a stable sort keeps the concatenation order), then regions
        owner = torch.cat([tile_owner, region_owner])
        rows = torch.cat([torch.arange(flat.shape[0], device=device), region_rows])
        rows = rows[torch.sort(owner, stable=True).indices]
        counts = torch.tensor(counts, device=device) + torch.bincount(region_owner, minlength=len(num_tiles))
        return flat.index_select(0, rows), counts

    def input_embeddings(self, input_ids, pixel_values=None, num_tiles=None, prompt_masks=None) -> torch.Tensor:
        """Token embeddings with visual features scattered into the ``<IMG_CONTEXT>`` positions. -> [B,L,D]"""
        embeds = self.embed_tokens(input_ids)  # [B,L,D]
        is_ctx = input_ids == self.img_context_token_id  # [B,L]
        if pixel_values is None:
            n_ctx = is_ctx.sum(1).tolist()
            if any(n_ctx):
                bad = [i for i, n in enumerate(n_ctx) if n]
                raise ValueError(f"batch index {bad[0]}: {n_ctx[bad[0]]} <IMG_CONTEXT> tokens but no pixel_values")
            # keep the projector in the graph so DDP/ZeRO see a gradient for it (ZeRO-3: the vision tower too)
            if getattr(self, "uniform_module_calls", False):
                dummy = self.image_features(embeds.new_zeros(1, 3, self.tile_size, self.tile_size))
            else:
                proj = self.hf_model.model.multi_modal_projector
                dummy = proj(embeds.new_zeros(1, 1, proj.layer_norm.normalized_shape[0]))
            return embeds + dummy.sum() * 0.0
        if num_tiles is None:
            num_tiles = [pixel_values.shape[0] // input_ids.shape[0]] * input_ids.shape[0]
        visual, counts = self.visual_embeddings(pixel_values, num_tiles, prompt_masks)
        n_ctx, counts = torch.stack([is_ctx.sum(1), counts]).tolist()  # one device sync
        for i, (n, c) in enumerate(zip(n_ctx, counts)):
            if n != c:
                regions = 0 if prompt_masks is None or prompt_masks[i] is None else int(prompt_masks[i].sum())
                raise ValueError(
                    f"batch index {i}: {n} <IMG_CONTEXT> tokens but {c} visual features "
                    f"({num_tiles[i]} tiles x {self.tokens_per_tile} + {regions} region cells); "
                    f"was the sequence truncated or built for another tile size?")
        return embeds.masked_scatter(is_ctx[..., None], visual.to(embeds.dtype))

    # -- language model -------------------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask=None, position_ids=None, pixel_values=None, num_tiles=None,
                prompt_masks=None, labels=None, **unused) -> dict:
        """Returns ``{'hidden_states': [B,L,D] final-layer (normed) states, 'loss': LM loss or None}``."""
        embeds = self.input_embeddings(input_ids, pixel_values, num_tiles, prompt_masks)
        if self.right_padded and attention_mask is not None:
            self._check_right_padded(attention_mask)
            attention_mask = None  # causal attention alone (see ``right_padded``)
        out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False)
        hidden = out.last_hidden_state  # [B,L,D]
        loss = self.lm_loss(hidden, labels) if labels is not None else None
        return {"hidden_states": hidden, "loss": loss}

    def _check_right_padded(self, attention_mask: torch.Tensor) -> None:
        """Every row must be real tokens then pads. Checked on every CPU mask; on an accelerator only the first
        (each check there is a host sync)."""
        on_device = attention_mask.device.type != "cpu"
        if on_device and self._padding_checked_on_device:
            return
        mask = attention_mask.bool()  # [B,L]
        late = (mask[:, 1:] & ~mask[:, :-1]).any(dim=1)  # [B] a real token after a pad
        if bool(late.any()):
            rows = late.nonzero().flatten().tolist()
            raise ValueError(f"InternVLMLLM(right_padded=True): attention_mask rows {rows} have a real token after a "
                             f"pad (left padding?); pass right-padded rows (sa2va_collate_fn) or build the model "
                             f"with right_padded=False")
        self._padding_checked_on_device |= on_device

    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token CE averaged over supervised tokens; the head runs only on supervised positions."""
        shift_labels = labels[:, 1:]
        if not self.loss_on_supervised_only:
            logits = self.lm_head(hidden[:, :-1]).float()  # [B,L-1,V]
            return nn.functional.cross_entropy(logits.flatten(0, 1), shift_labels.flatten(), ignore_index=-100)
        supervised = shift_labels != -100  # [B,L-1]
        h = hidden[:, :-1][supervised]  # [n_sup,D]
        if h.shape[0] == 0:  # nothing supervised: a zero that keeps the head in the graph
            return self.lm_head(hidden[:, :1]).sum() * 0.0
        logits = self.lm_head(h).float()  # [n_sup,V]
        return nn.functional.cross_entropy(logits, shift_labels[supervised])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)


# Name used by the original Sa2VA configs (there is no slow/fast pathway here).
InternVL_Slowfast = InternVLMLLM
