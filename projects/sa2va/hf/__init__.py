"""Checkpoint interop: export a trained model to one self-contained directory and import checkpoints made elsewhere.

* :func:`load_pretrained_sa2va` -- load an exported directory (``tools/convert_to_hf.py``) for inference.
* :func:`export_sa2va` / :func:`export_from_config` -- write such a directory (LoRA merged).
* :func:`load_original_internvl` -- original InternVL remote-code directories -> native transformers (automatic in
  :class:`sa2va.models.InternVLMLLM`).
* :func:`load_sa2va_hf` -- released Sa2VA HF directories -> a built model, to fine-tune from.

Formats and key mappings: docs/checkpoints.md.
"""
from .export import export_from_config, export_sa2va, load_trainable_checkpoint, read_trainable_state
from .import_internvl import is_original_internvl, load_original_internvl, load_original_tokenizer
from .import_sa2va import init_from_sa2va_hf, is_sa2va_hf, load_sa2va_hf
from .layout import ExportConfig
from .pretrained import load_pretrained_sa2va

__all__ = ["load_pretrained_sa2va", "export_sa2va", "export_from_config", "read_trainable_state",
           "load_trainable_checkpoint", "ExportConfig",
           "is_original_internvl", "load_original_internvl", "load_original_tokenizer", "is_sa2va_hf",
           "load_sa2va_hf", "init_from_sa2va_hf"]
