"""Pieces shared by the importers and the exporter: reading checkpoint directories, checking a converted state dict
against the model it is meant for (errors name the file and the keys), copying weights into a model whose layers
may be wrapped by peft, and the report every conversion logs (what was loaded, what is new, what was ignored).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def weight_files(model_dir: str | os.PathLike) -> list[Path]:
    """The weight files of a transformers-style directory: sharded or single, safetensors preferred over .bin."""
    model_dir = Path(model_dir)
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        if (model_dir / index_name).is_file():
            shards = sorted(set(read_json(model_dir / index_name)["weight_map"].values()))
            missing = [s for s in shards if not (model_dir / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{model_dir / index_name} lists shards that are not there: {missing}")
            return [model_dir / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / single).is_file():
            return [model_dir / single]
    raise FileNotFoundError(f"{model_dir}: no model.safetensors[.index.json] or pytorch_model.bin[.index.json]")


def read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(model_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of a checkpoint directory, and for each key the file it came from (for error messages)."""
    state, origin = {}, {}
    for f in weight_files(model_dir):
        part = read_weight_file(f)
        for k, v in part.items():
            if k in state:
                raise ValueError(f"{f}: key '{k}' also appears in {origin[k]}")
            state[k] = v
            origin[k] = f
    return state, origin


def _listing(keys, limit: int = 10) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], source: str,
                     target: str, renamed_from: dict[str, str] | None = None) -> None:
    """Raise a ``KeyError``/``ValueError`` naming ``source`` (the file or directory) and every missing, unexpected
    or mis-shaped key; ``renamed_from`` maps a converted key back to its name in the checkpoint."""
    renamed_from = renamed_from or {}

    def named(key: str) -> str:
        original = renamed_from.get(key, key)
        return key if original == key else f"{key} (checkpoint key {original})"

    missing = [named(k) for k in expected if k not in state]
    unexpected = [named(k) for k in state if k not in expected]
    if missing or unexpected:
        raise KeyError(f"{source} does not match {target}: missing {len(missing)} [{_listing(missing)}], "
                       f"unexpected {len(unexpected)} [{_listing(unexpected)}]")
    shapes = [f"{named(k)}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k])}"
              for k, v in state.items() if tuple(v.shape) != tuple(expected[k])]
    if shapes:
        raise ValueError(f"{source} does not match {target}: shape mismatch for {len(shapes)} tensors: "
                         f"{_listing(shapes, 5)}")


@dataclass
class ConversionReport:
    """What a conversion did, logged once: ``loaded`` (tensors taken from the checkpoint, per group), ``new`` (model
    tensors not in the checkpoint, e.g. fresh LoRA adapters or added special-token rows) and ``ignored``
    (checkpoint tensors that were not used)."""

    source: str
    verb: str = "loaded"
    loaded: dict[str, int] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def count(self, group: str, n: int = 1) -> None:
        self.loaded[group] = self.loaded.get(group, 0) + n

    def log(self) -> None:
        groups = ", ".join(f"{g}: {n}" for g, n in self.loaded.items())
        msg = f"{self.source}: {self.verb} {sum(self.loaded.values())} tensors ({groups})"
        msg += f"; new {len(self.new)}" + (f" [{_listing(self.new, 6)}]" if self.new else "")
        msg += f"; ignored {len(self.ignored)}" + (f" [{_listing(self.ignored, 6)}]" if self.ignored else "")
        MMLogger.get_current_instance().info(msg)


# -- peft-aware weight copying ----------------------------------------------------------------------------------
_PEFT_WRAPPERS = (".base_layer", ".token_adapter")
_PEFT_ADAPTER_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector",
                       "trainable_tokens_delta", "trainable_tokens_original", "modules_to_save")


def plain_parameter_names(module: nn.Module) -> dict[str, torch.Tensor]:
    """``{name without peft wrappers: tensor}`` for every persistent weight of ``module``, skipping adapter
    weights: ``...q_proj.base_layer.weight`` -> ``...q_proj.weight``, ``embed_tokens.token_adapter.base_layer.weight``
    -> ``embed_tokens.weight``. For a model without peft this is just its state dict."""
    out = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if any(f".{p}." in f".{name}." for p in _PEFT_ADAPTER_PARTS):
            continue
        plain = name
        for w in _PEFT_WRAPPERS:
            plain = plain.replace(w, "")
        out[plain] = tensor
    return out


@torch.no_grad()
def copy_into(module: nn.Module, state: dict[str, torch.Tensor], source: str, target: str,
              renamed_from: dict[str, str] | None = None) -> None:
    """Copy ``state`` (plain names) into ``module`` in place (dtype follows the model), after a strict key and shape
    check. Token adapters (peft ``trainable_token_indices``) hold full copies of their rows: they are refreshed from
    the new weights so the special-token rows come from the checkpoint too."""
    own = plain_parameter_names(module)
    check_state_dict(state, {k: v.shape for k, v in own.items()}, source, target, renamed_from)
    for k, v in state.items():
        own[k].data.copy_(v)
    refresh_token_adapters(module)


@torch.no_grad()
def refresh_token_adapters(module: nn.Module) -> None:
    """Set every peft trainable-token adapter's rows (and its 'original' copy) to the current base-layer rows."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    for layer in module.modules():
        if isinstance(layer, TrainableTokensLayer) and layer.tied_adapter is None:
            weight = layer.get_base_layer().weight
            for name, idx in layer.token_indices.items():
                rows = weight[torch.as_tensor(idx, device=weight.device)]
                layer.trainable_tokens_delta[name].data.copy_(rows)
                layer.trainable_tokens_original[name].copy_(rows)
