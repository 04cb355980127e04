"""The exported directory: file names and the Sa2VA part of its configuration (``sa2va_config.json``).

::

    DIR/
      config.json, generation_config.json   native transformers InternVL config (vocab includes the special tokens)
      model.safetensors | model-0000i-of-0000n.safetensors + model.safetensors.index.json
                                            InternVL weights, LoRA merged, special-token rows folded in
      tokenizer.json, tokenizer_config.json, chat_template.jinja ...
                                            the run's tokenizer (Sa2VA special tokens already added)
      sam2_config.yaml                      the SAM2 YAML the model was built from (Meta vocabulary)
      sam2.safetensors                      the SAM2 state dict (Meta key names, fp32)
      text_hidden_fcs.safetensors           LLM hidden -> SAM2 prompt projection (fp32)
      sa2va_config.json                     this module's :class:`ExportConfig`

``DIR`` is also a plain InternVL ``-hf`` directory: ``InternVLForConditionalGeneration.from_pretrained(DIR)``
loads its multimodal LLM alone.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_NAME = "sa2va-export"
FORMAT_VERSION = 1
CONFIG_FILE = "sa2va_config.json"
SAM2_CONFIG_FILE = "sam2_config.yaml"
SAM2_WEIGHTS_FILE = "sam2.safetensors"
TEXT_FCS_FILE = "text_hidden_fcs.safetensors"


@dataclass
class ExportConfig:
    """What a predictor needs besides the InternVL config: tokens, prompt template, image sizes, SAM2 build."""

    special_tokens: list[str]
    seg_token: str = "[SEG]"
    template: str | dict | None = None  # a sa2va.datasets.templates name ('qwen_chat', ...) or a template dict
    tile_size: int = 448
    max_tiles: int = 12
    min_tiles: int = 1
    use_thumbnail: bool = True
    tokens_per_tile: int = 256
    sam2_image_size: int = 1024
    sam2_hydra_overrides: list[str] = field(default_factory=list)
    sam2_multimask_output: bool = True  # SAM2TrainRunner.multimask_output of the trained model
    sam2_source_config: str = ""  # the name or file the training config gave (the YAML itself is in the directory)
    llm_dtype: str = "bfloat16"
    exported_from: dict = field(default_factory=dict)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def save(self, out_dir: str | os.PathLike) -> Path:
        path = Path(out_dir) / CONFIG_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "ExportConfig":
        path = Path(model_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {model_dir} is not a directory written by "
                                    f"tools/convert_to_hf.py")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT_NAME or data.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path}: format {data.get('format')!r} version {data.get('format_version')} is not "
                             f"'{FORMAT_NAME}' <= {FORMAT_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}")
        return cls(**data)
