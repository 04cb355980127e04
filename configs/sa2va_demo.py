# Zero-setup demo: tiny random models of the real architectures + synthetic data in the real formats.
#   python tools/train.py configs/sa2va_demo.py
# The assets are written to ./work_dirs/sa2va_demo_assets on first use. Runs on CPU in a few minutes and ends with
# the validation cIoU of the held-out synthetic RefCOCO split.
from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR
from mmengine.visualization import LocalVisBackend, TensorboardVisBackend, Visualizer
from peft import LoraConfig
from torch.optim import AdamW

from sa2va.datasets import (ConcatDataset, CustomJsonDataset, DirectResize, EpochDefaultSampler,  # noqa: F401
                            LengthGroupedSampler, OspreyDescriptionDataset, ReferRegionCaptionDataset, ReferSegmDataset,
                            sa2va_collate_fn)
from sa2va.demo import make_demo_assets
from sa2va.engine import AtomicCheckpointHook, ReferEvalHook, TrainLoop
from sa2va.models import CrossEntropyLoss, DiceLoss, InternVLMLLM, SAM2TrainRunner, VideoLLaVASAMModel
from sa2va.tokenizer import build_tokenizer

# ------------------------------------------------------------------ paths (made by `prepare` on first use)
assets = './work_dirs/sa2va_demo_assets'    # relative to the working directory
prepare = dict(type=make_demo_assets, root=assets, seed=0, num_images=48)
path = assets + '/tiny_internvl'                      # InternVL directory (transformers layout)
sam2_cfg = assets + '/tiny_sam2/sam2_tiny.yaml'       # Meta-style SAM2 config
sam2_ckpt = assets + '/tiny_sam2/sam2_tiny.pt'        # Meta-format checkpoint {'model': state_dict}
data_root = assets + '/data/'

# ------------------------------------------------------------------ choices
template = 'qwen_chat'
special_tokens = ['[SEG]', '<p>', '</p>', '<vp>', '</vp>']
tile_size = 112            # the tiny InternViT's tile; 448 for real checkpoints
sam2_size = 256            # the tiny SAM2's input; 1024 for real checkpoints
max_length = 2048
batch_size = 2
accumulative_counts = 1
dataloader_num_workers = 0
max_epochs = 6
lr = 1e-3
weight_decay = 0.0
max_norm = 1.0
warmup_ratio = 0.05
save_steps = 100
save_total_limit = 2
log_interval = 10

tokenizer = dict(type=build_tokenizer, pretrained_model_name_or_path=path, special_tokens=special_tokens)

# ------------------------------------------------------------------ model
model = dict(
    type=VideoLLaVASAMModel,
    mllm=dict(type=InternVLMLLM, model_path=path, special_tokens=special_tokens, torch_dtype='bfloat16',
              llm_lora=dict(type=LoraConfig, r=16, lora_alpha=32, lora_dropout=0.0, bias='none'),
              new_token_training='rows', freeze_llm=True, freeze_visual_encoder=True),
    grounding_encoder=dict(type=SAM2TrainRunner, cfg_path=sam2_cfg, ckpt_path=sam2_ckpt),
    loss_mask=dict(type=CrossEntropyLoss, use_sigmoid=True, reduction='mean', loss_weight=2.0),
    loss_dice=dict(type=DiceLoss, use_sigmoid=True, activate=True, reduction='mean', naive_dice=True, eps=1.0,
                   loss_weight=0.5),
    loss_sample_points=True,
    pretrained_pth=None,
)

# ------------------------------------------------------------------ data
sam2_processor = dict(type=DirectResize, target_length=sam2_size)
common = dict(tokenizer=tokenizer, template=template, max_length=max_length, tile_size=tile_size,
              uint8_tiles=True)  # tiles leave the loader as uint8; the model normalises them on its device

refcoco = dict(type=ReferSegmDataset, data_root=data_root + 'ref_seg/refcoco', split_file='refs(unc).p',
               data_prefix=dict(img_path='../../coco2014/train2014/'), extra_image_processor=sam2_processor,
               num_classes_per_sample=3, split='train', repeats=2, name='refcoco', **common)
refcocog = dict(type=ReferSegmDataset, data_root=data_root + 'ref_seg/refcocog', split_file='refs(umd).p',
                data_prefix=dict(img_path='../../coco2014/train2014/'), extra_image_processor=sam2_processor,
                num_classes_per_sample=3, split='train', repeats=2, name='refcocog', **common)
region_caption = dict(type=ReferRegionCaptionDataset, data_root=data_root + 'ref_seg/refcocog',
                      split_file='refs(umd).p', data_prefix=dict(img_path='../../coco2014/train2014/'),
                      num_classes_per_sample=2, split='train', repeats=4, name='refcocog_region_caption',
                      **common)
custom_seg = dict(type=CustomJsonDataset, data_root=data_root + 'custom', task='seg',
                  extra_image_processor=sam2_processor, name='custom_seg', **common)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=dict(type=ConcatDataset, datasets=[refcoco, refcocog, region_caption, custom_seg]),
    # plain shuffling instead: sampler=dict(type=EpochDefaultSampler, shuffle=True) (not mmengine's DefaultSampler,
    # which does not hand the epoch to the datasets, so every epoch would repeat epoch 0's refs and sentences)
    sampler=dict(type=LengthGroupedSampler, per_device_batch_size=batch_size * accumulative_counts),
    collate_fn=dict(type=sa2va_collate_fn),
)

# ------------------------------------------------------------------ optimisation
optim_wrapper = dict(
    type=AmpOptimWrapper,
    optimizer=dict(type=AdamW, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay),
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
# held-out synthetic splits, evaluated at the end of training (cIoU/gIoU and region-caption exact match)
refcoco_val = dict(refcoco, split='val', repeats=1, name='refcoco_val')
refcocog_val = dict(refcocog, split='val', repeats=1, name='refcocog_val')
custom_hooks = [dict(type=ReferEvalHook, datasets=dict(refcoco_val=refcoco_val),
                     caption_datasets=dict(refcocog_val=refcocog_val), interval=0, max_items=None)]
visualizer = dict(type=Visualizer, vis_backends=[dict(type=LocalVisBackend), dict(type=TensorboardVisBackend)])
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(by_epoch=False, window_size=log_interval)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
