# Sa2VA-4B recipe on RefCOCO + RefCOCO+ + RefCOCOg (referring segmentation only).
#   python tools/train.py configs/sa2va_refcoco_only.py
#   bash tools/dist.sh train configs/sa2va_refcoco_only.py 8          (DeepSpeed ZeRO-2, bf16)
# Data layout (docs/data.md), as in the original Sa2VA:
#   data/ref_seg/{refcoco,refcoco+,refcocog}/{instances.json, refs(unc).p | refs(umd).p}
#   data/ref_seg/<each>/coco2014/train2014/*.jpg   (a symlink to one COCO train2014 folder is enough)
# Weights: an InternVL directory (transformers `-hf` layout, or the original InternVL2_5-4B, converted on load)
# and Meta's sam2_hiera_large.pt.
from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR
from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer
from peft import LoraConfig
from torch.optim import AdamW

from sa2va.datasets import ConcatDataset, DirectResize, LengthGroupedSampler, ReferSegmDataset, sa2va_collate_fn
from sa2va.engine import AtomicCheckpointHook, TrainLoop
from sa2va.models import CrossEntropyLoss, DiceLoss, InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel
from sa2va.tokenizer import build_tokenizer

# ------------------------------------------------------------------ paths
path = './pretrained/InternVL2_5-4B'            # or an InternVL `-hf` directory
sam2_cfg = 'sam2_hiera_l.yaml'                   # Meta config name (SAM 2.1: 'sam2.1_hiera_l.yaml')
sam2_ckpt = './pretrained/sam2_hiera_large.pt'
data_root = './data/ref_seg/'
image_dir = 'coco2014/train2014/'               # relative to each dataset's data_root (or absolute)
pretrained_pth = None                            # trainable-weights checkpoint or a released Sa2VA HF directory

# ------------------------------------------------------------------ choices
template = 'phi3_chat'                           # the 4B recipe's template ('qwen_chat' also works)
special_tokens = ['[SEG]', '<p>', '</p>', '<vp>', '</vp>']
tile_size = 448
max_dynamic_patch = 12
sam2_size = 1024
max_length = 8192
batch_size = 2                                   # per device
accumulative_counts = 4
dataloader_num_workers = 4
max_epochs = 1
lr = 4e-5
betas = (0.9, 0.999)
weight_decay = 0.05
max_norm = 1
warmup_ratio = 0.05
lora_r, lora_alpha = 128, 256
save_steps = 1000
save_total_limit = 2
log_interval = 10

tokenizer = dict(type=build_tokenizer, pretrained_model_name_or_path=path, special_tokens=special_tokens)

# ------------------------------------------------------------------ model
model = dict(
    type=VideoLLaVASAMModel,
    mllm=dict(type=InternVLMLLM, model_path=path, special_tokens=special_tokens, torch_dtype='bfloat16',
              llm_lora=dict(type=LoraConfig, r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.05, bias='none'),
              new_token_training='rows', freeze_llm=True, freeze_visual_encoder=True,
              gradient_checkpointing=True),
    grounding_encoder=dict(type=SAM2TrainRunner, cfg_path=sam2_cfg, ckpt_path=sam2_ckpt, image_size=sam2_size),
    loss_mask=dict(type=CrossEntropyLoss, use_sigmoid=True, reduction='mean', loss_weight=2.0),
    loss_dice=dict(type=DiceLoss, use_sigmoid=True, activate=True, reduction='mean', naive_dice=True, eps=1.0,
                   loss_weight=0.5),
    loss_sample_points=True,
    pretrained_pth=pretrained_pth,
)

# ------------------------------------------------------------------ data
refer_common = dict(tokenizer=tokenizer, template=template, max_length=max_length, tile_size=tile_size,
                    max_dynamic_patch=max_dynamic_patch, data_prefix=dict(img_path=image_dir),
                    extra_image_processor=dict(type=DirectResize, target_length=sam2_size),
                    num_classes_per_sample=5, split='train',
                    uint8_tiles=True)  # tiles leave the loader as uint8; the model normalises them on the GPU
refcoco = dict(type=ReferSegmDataset, data_root=data_root + 'refcoco', split_file='refs(unc).p', name='refcoco',
               **refer_common)
refcoco_plus = dict(type=ReferSegmDataset, data_root=data_root + 'refcoco+', split_file='refs(unc).p',
                    name='refcoco+', **refer_common)
refcocog = dict(type=ReferSegmDataset, data_root=data_root + 'refcocog', split_file='refs(umd).p',
                name='refcocog', **refer_common)
train_datasets = [refcoco, refcoco_plus, refcocog]

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    persistent_workers=False,      # True works too: the sampler sends each index with its epoch
    dataset=dict(type=ConcatDataset, datasets=train_datasets),
    sampler=dict(type=LengthGroupedSampler, per_device_batch_size=batch_size * accumulative_counts),
    collate_fn=dict(type=sa2va_collate_fn),
)

# ------------------------------------------------------------------ optimisation
optim_wrapper = dict(
    type=AmpOptimWrapper,
    optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale=dict(enabled=False),   # bf16 autocast needs no loss scaling
    dtype='bfloat16',
)
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-5, by_epoch=True, begin=0, end=warmup_ratio * max_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=True, begin=warmup_ratio * max_epochs, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

# ------------------------------------------------------------------ runtime
default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=log_interval),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=AtomicCheckpointHook, interval=save_steps, max_keep_ckpts=save_total_limit),
    sampler_seed=dict(type=DistSamplerSeedHook),
)
custom_hooks = []
visualizer = dict(type=Visualizer, vis_backends=[dict(type=LocalVisBackend), dict(type=TensorboardVisBackend)])
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False, window_size=log_interval)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
