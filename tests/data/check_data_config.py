# Minimal training-data config for tests/data/test_check_data.py (synthetic data, tiny tokenizer, 112-px tiles).
# The test points the paths at its temporary synthetic data and tiny tokenizer with --cfg-options.
from sa2va.datasets.collate import sa2va_collate_fn
from sa2va.datasets.concat import ConcatDataset
from sa2va.datasets.custom_json import CustomJsonDataset
from sa2va.datasets.image_processing import DirectResize
from sa2va.datasets.osprey import OspreyDataset
from sa2va.datasets.refer import ReferRegionCaptionDataset, ReferSegmDataset
from sa2va.datasets.samplers import LengthGroupedSampler
from sa2va.tokenizer import build_tokenizer

data_root = 'data/synthetic'
tokenizer = dict(type=build_tokenizer, pretrained_model_name_or_path='pretrained/tiny_internvl')
common = dict(tokenizer=tokenizer, template='qwen_chat', max_length=2048, tile_size=112, max_dynamic_patch=4, seed=0)
image_dir = data_root + '/coco2014/train2014/'

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type=LengthGroupedSampler, per_device_batch_size=2),
    collate_fn=dict(type=sa2va_collate_fn),
    dataset=dict(type=ConcatDataset, datasets=[
        dict(type=ReferSegmDataset, name='refcoco', data_root=data_root + '/ref_seg/refcoco',
             data_prefix=dict(img_path=image_dir), extra_image_processor=dict(type=DirectResize, target_length=256),
             repeats=2, **common),
        dict(type=ReferRegionCaptionDataset, name='refcocog_caption', data_root=data_root + '/ref_seg/refcocog',
             split_file='refs(umd).p', data_prefix=dict(img_path=image_dir), **common),
        dict(type=OspreyDataset, name='osprey_conversation', data_path=data_root + '/osprey/osprey_conversation.json',
             image_folder=[image_dir], **common),
        dict(type=CustomJsonDataset, name='custom', data_root=data_root + '/custom',
             extra_image_processor=dict(type=DirectResize, target_length=256), **common),
    ]),
)
