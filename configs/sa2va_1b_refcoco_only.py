# Sa2VA-1B recipe (InternVL2.5-1B: InternViT-300M + Qwen2.5-0.5B) on RefCOCO + RefCOCO+ + RefCOCOg.
# Everything not set here is as in sa2va_refcoco_only.py.
from mmengine.config import read_base

with read_base():
    from .sa2va_refcoco_only import *  # noqa: F401,F403

path = './pretrained/InternVL2_5-1B'
template = 'qwen_chat'                 # the 1B recipe's template

tokenizer.pretrained_model_name_or_path = path          # noqa: F405
model.mllm.model_path = path                            # noqa: F405
for _dataset in train_dataloader.dataset.datasets:      # noqa: F405
    _dataset.template = template
    _dataset.tokenizer.pretrained_model_name_or_path = path
