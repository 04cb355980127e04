"""Moves a collated batch to the model's device: every tensor once, the packed per-item lists one buffer at a time."""
from __future__ import annotations

from mmengine.model import BaseDataPreprocessor

from ..datasets.collate import PackedTensorList
from ..registry import BUILDER


@BUILDER.register_module()
class Sa2VADataPreprocessor(BaseDataPreprocessor):
    """mmengine's ``BaseDataPreprocessor`` (recursive ``cast_data``) that copies a :class:`PackedTensorList` as its
    flat buffers (one copy per dtype) instead of item by item, and copies asynchronously by default: the
    DataLoader pins the batch (``pin_memory=True``), so the copies overlap the host's work on the step. mmengine's
    default, ``non_blocking=False``, waits for each copy.
    """

    def __init__(self, non_blocking: bool = True):
        super().__init__(non_blocking=non_blocking)

    def cast_data(self, data):
        if isinstance(data, PackedTensorList):
            return data.to(self.device, non_blocking=self._non_blocking)
        return super().cast_data(data)  # recurses through self.cast_data
