# RefCOCO family (caption -> mask) + mask captioning (mask -> caption): REFER region captions (RefCOCOg),
# Osprey-724K and your own annotations in the simple Sa2VA json. Everything else as in sa2va_refcoco_only.py.
# Extra data layout (docs/data.md):
#   data/osprey-724k/Osprey-724K/{osprey_conversation,osprey_detail_description,osprey_short_form}.json
#   data/osprey-724k/coco/{train2014,val2014,train2017,val2017}/
#   data/custom/{annotations.json, images/}
from mmengine.config import read_base

with read_base():
    from .sa2va_refcoco_only import *  # noqa: F401,F403

from sa2va.datasets import (CustomJsonDataset, OspreyDataset, OspreyDescriptionDataset,  # noqa: E402
                            OspreyShortDescriptionDataset, ReferRegionCaptionDataset)

osprey_root = './data/osprey-724k/'
osprey_images = [osprey_root + 'coco/train2014/', osprey_root + 'coco/val2014/', osprey_root + 'coco/train2017/',
                 osprey_root + 'coco/val2017/']
custom_root = './data/custom/'

caption_common = dict(tokenizer=tokenizer, template=template, max_length=max_length,  # noqa: F405
                      tile_size=tile_size, max_dynamic_patch=max_dynamic_patch,  # noqa: F405
                      uint8_tiles=True,        # as refer_common: one tile dtype per batch
                      skip_bad_records=True)   # regions too small for the 16x16 prompt grid are skipped and counted

region_caption_refcocog = dict(type=ReferRegionCaptionDataset, data_root=data_root + 'refcocog',  # noqa: F405
                               split_file='refs(umd).p', data_prefix=dict(img_path=image_dir),  # noqa: F405
                               num_classes_per_sample=3, split='train', name='refcocog_region_caption',
                               **caption_common)
osprey_conversation = dict(type=OspreyDataset, data_path=osprey_root + 'Osprey-724K/osprey_conversation.json',
                           image_folder=osprey_images, name='osprey_conversation', **caption_common)
osprey_detail = dict(type=OspreyDescriptionDataset,
                     data_path=osprey_root + 'Osprey-724K/osprey_detail_description.json',
                     image_folder=osprey_images, name='osprey_detail_description', **caption_common)
osprey_short = dict(type=OspreyShortDescriptionDataset, data_path=osprey_root + 'Osprey-724K/osprey_short_form.json',
                    image_folder=osprey_images, name='osprey_short_form', **caption_common)
custom_caption = dict(type=CustomJsonDataset, data_root=custom_root, task='caption', repeats=10,
                      name='custom_caption', **caption_common)

train_dataloader.dataset.datasets = train_dataloader.dataset.datasets + [  # noqa: F405
    region_caption_refcocog, osprey_conversation, osprey_detail, osprey_short, custom_caption]
