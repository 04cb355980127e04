"""COCO segmentations -> binary masks, and masks -> the thumbnail's prompt grid.

Accepted ``segmentation`` forms (what COCO, REFER, Osprey and the Sa2VA custom json use):

* polygons: a list of flat ``[x0, y0, x1, y1, ...]`` lists, one per part of the object;
* compressed RLE: ``{"size": [H, W], "counts": "str or bytes"}``;
* uncompressed RLE: ``{"size": [H, W], "counts": [int, ...]}`` (COCO crowd annotations).

Every form decodes to a 0/1 ``uint8 [H, W]`` mask. Overlapping polygon parts are **unioned** (the original summed
them, giving 2 where parts overlap). A record that cannot give a meaningful mask raises
:class:`~sa2va.datasets.errors.BadRecordError` naming the file, record id and field: a polygon with fewer than three
points, an odd number of coordinates, zero area, or lying entirely outside the image; an RLE whose size is not the
image size; and any segmentation that decodes to an empty mask.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from .errors import BadRecordError

__all__ = ["decode_segmentation", "to_prompt_grid"]


def _polygon_area(xy: np.ndarray) -> float:
    """Shoelace area of one polygon; ``xy`` is ``[P, 2]``."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _check_polygons(polygons: list, height: int, width: int, bad) -> list[list[float]]:
    """Validate polygon parts; returns them as float lists for pycocotools."""
    checked = []
    for k, poly in enumerate(polygons):
        if not isinstance(poly, Sequence) or isinstance(poly, (str, bytes)) \
                or not all(isinstance(v, Real) for v in poly):
            raise bad(f"polygon {k} is not a flat list of numbers", "bad_polygon")
        if len(poly) % 2 or len(poly) < 6:
            raise bad(f"polygon {k} has {len(poly)} coordinates; need an even number and at least 3 points",
                      "bad_polygon")
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)  # [P, 2] as (x, y)
        if not np.isfinite(xy).all():
            raise bad(f"polygon {k} has non-finite coordinates", "bad_polygon")
        if _polygon_area(xy) <= 0.0:
            raise bad(f"polygon {k} has zero area", "bad_polygon")
        if xy[:, 0].max() <= 0 or xy[:, 0].min() >= width or xy[:, 1].max() <= 0 or xy[:, 1].min() >= height:
            raise bad(f"polygon {k} lies entirely outside the {width}x{height} image", "polygon_outside")
        checked.append([float(v) for v in poly])
    return checked


def _check_rle_size(rle: dict, height: int, width: int, bad) -> None:
    size = rle.get("size")
    if size is None or [int(s) for s in size] != [height, width]:
        raise bad(f"RLE size {size} does not match the image size [H, W] = [{height}, {width}]", "bad_rle")


def decode_segmentation(segmentation, height: int, width: int, *, file: str | os.PathLike, record_id: object,
                        field: str = "segmentation") -> np.ndarray:
    """Decode one object's segmentation into a 0/1 ``uint8 [height, width]`` mask.

    ``file``/``record_id``/``field`` only serve the error message.
    """

    def bad(problem: str, reason: str) -> BadRecordError:
        return BadRecordError(file, record_id, field, problem, reason=reason)

    try:
        if isinstance(segmentation, dict):
            counts = segmentation.get("counts")
            _check_rle_size(segmentation, height, width, bad)
            if isinstance(counts, list):  # uncompressed RLE -> compressed
                rle = mask_utils.frPyObjects(segmentation, height, width)
            elif isinstance(counts, (str, bytes)):
                rle = dict(size=[height, width], counts=counts)
            else:
                raise bad(f"RLE counts must be a list, str or bytes, got {type(counts).__name__}", "bad_rle")
        elif isinstance(segmentation, list) and segmentation:
            polygons = _check_polygons(segmentation, height, width, bad)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))  # union of the parts
        else:
            raise bad(f"expected polygons (non-empty list) or an RLE dict, got {segmentation!r:.80}",
                      "bad_segmentation")
        mask = mask_utils.decode(rle)  # [H, W] uint8, Fortran order
    except BadRecordError:
        raise
    except Exception as e:  # pycocotools' own errors (corrupt RLE strings, ...)
        raise bad(f"pycocotools cannot decode it: {type(e).__name__}: {e}", "bad_segmentation") from e
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim == 3:  # a list of RLEs decodes to [H, W, K]
        mask = mask.max(axis=2)
    np.minimum(mask, 1, out=mask)
    if not mask.any():
        raise bad("decodes to an empty mask", "empty_mask")
    return mask  # [H, W] uint8 0/1


def to_prompt_grid(masks: torch.Tensor | np.ndarray, grid: int) -> torch.Tensor:
    """Nearest-neighbour downsample of region masks ``[R, H, W]`` to the ``[R, grid, grid]`` token grid (0/1 uint8).

    Same sampling as the original (``F.interpolate(mode='nearest')``): cell ``(i, j)`` takes the pixel at
    ``(floor(i * H / grid), floor(j * W / grid))``. The grid is that of the whole-image thumbnail tile.
    """
    masks = torch.as_tensor(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected masks [R, H, W], got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return torch.zeros((0, grid, grid), dtype=torch.uint8)
    small = F.interpolate(masks[None].float(), size=(grid, grid), mode="nearest")[0]  # [R, g, g]
    return (small > 0).to(torch.uint8)
