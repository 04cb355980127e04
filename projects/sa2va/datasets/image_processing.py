"""Images -> model inputs: InternVL tiles and the SAM2 square image.

* :class:`TileProcessor`: InternVL dynamic tiling (reference §1.5). It delegates to transformers'
  ``GotOcr2ImageProcessorPil`` (the PIL backend of the InternVL ``-hf`` image processor, ``crop_to_patches``),
  which reproduces the original ``dynamic_preprocess`` exactly: same grid choice including the tie rule, PIL
  bicubic resizes, row-major crops, thumbnail last; pixel-identical tiles (tests/data/test_tiling.py compares
  against the reference algorithm). The torchvision backend of that processor resizes differently and is not used.
  With ``normalize=False`` the tiles stay uint8 pixels and :func:`normalize_tiles` turns them into the model's
  input on its device (the model does this for uint8 ``pixel_values``): half a loader worker's CPU time per
  sample and a 4x smaller batch to pin and copy; the values are identical.
* :func:`num_tiles_for_size`: the tile count from the image size alone (for the sampler's lengths).
* :class:`DirectResize` / :func:`sam2_image_tensor`: SAM2's input, a non-aspect-preserving bicubic square resize.
* :func:`tokens_per_tile` / :func:`prompt_grid_size`: how many LLM tokens a tile becomes.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def prompt_grid_size(tile_size: int, patch_size: int = 14, downsample_ratio: float = 0.5) -> int:
    """Side of a tile's LLM token grid: ``tile_size / patch_size * downsample_ratio`` (16 for 448-px tiles)."""
    if tile_size % patch_size:
        raise ValueError(f"tile_size {tile_size} is not a multiple of patch_size {patch_size}")
    grid = tile_size // patch_size * downsample_ratio
    if grid != int(grid) or grid < 1:
        raise ValueError(f"tile_size {tile_size} / patch_size {patch_size} * downsample_ratio {downsample_ratio} "
                         f"= {grid} is not a positive integer")
    return int(grid)


def tokens_per_tile(tile_size: int, patch_size: int = 14, downsample_ratio: float = 0.5) -> int:
    """LLM tokens per tile after pixel shuffle: 256 for 448-px tiles, 16 for the tiny 112-px ones."""
    return prompt_grid_size(tile_size, patch_size, downsample_ratio) ** 2


@functools.lru_cache(maxsize=8)
def _imagenet_mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, 3, 1, 1] float32 mean and std on ``device``, made once per device (not copied there every step)."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def normalize_tiles(tiles: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 tiles ``[T, 3, s, s]`` -> ImageNet-normalised ``dtype`` tiles, on the tiles' device (computed in
    float32, exactly what the image processor's rescale + normalise gives)."""
    if tiles.dtype != torch.uint8:
        raise TypeError(f"normalize_tiles expects uint8 tiles, got {tiles.dtype}")
    mean, std = _imagenet_mean_std(tiles.device)
    return ((tiles.float() / 255 - mean) / std).to(dtype)


@functools.lru_cache(maxsize=16)
def _tiler(tile_size: int, max_tiles: int, min_tiles: int):
    from transformers import GotOcr2ImageProcessorPil
    from transformers.image_utils import PILImageResampling

    if not 1 <= min_tiles <= max_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got min_tiles={min_tiles}, max_tiles={max_tiles}")
    return GotOcr2ImageProcessorPil(
        size={"height": tile_size, "width": tile_size}, crop_to_patches=True, min_patches=min_tiles,
        max_patches=max_tiles, resample=PILImageResampling.BICUBIC, do_convert_rgb=True,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )


def num_tiles_for_size(width: int, height: int, tile_size: int = 448, max_tiles: int = 12, min_tiles: int = 1,
                       use_thumbnail: bool = True) -> int:
    """Number of tiles :class:`TileProcessor` makes for a ``width`` x ``height`` image, without its pixels."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    n = _tiler(tile_size, max_tiles, min_tiles).get_number_of_image_patches(height, width, {})
    return n - 1 if n > 1 and not use_thumbnail else n


class TileProcessor:
    """PIL RGB image -> InternVL tiles, float ``[T, 3, tile_size, tile_size]``, ImageNet-normalised (uint8 pixels
    with ``normalize=False``; :func:`normalize_tiles` finishes them).

    The grid (i columns x j rows, ``min_tiles <= i*j <= max_tiles``) is the one closest to the image's aspect
    ratio; on an exact tie the larger grid wins only if the image area exceeds half of the grid's pixel area.
    When ``T > 1`` and ``use_thumbnail`` the whole image resized to one tile comes **last**.
    """

    def __init__(self, tile_size: int = 448, max_tiles: int = 12, min_tiles: int = 1, use_thumbnail: bool = True,
                 normalize: bool = True):
        self.normalize = bool(normalize)
        self.tile_size = tile_size
        self.max_tiles = max_tiles
        self.min_tiles = min_tiles
        self.use_thumbnail = use_thumbnail
        _tiler(tile_size, max_tiles, min_tiles)  # validate the arguments now

    def num_tiles(self, width: int, height: int) -> int:
        return num_tiles_for_size(width, height, self.tile_size, self.max_tiles, self.min_tiles, self.use_thumbnail)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"TileProcessor expects a PIL image, got {type(image).__name__}")
        tiler = _tiler(self.tile_size, self.max_tiles, self.min_tiles)
        tiles = tiler(images=image.convert("RGB"), do_rescale=self.normalize, do_normalize=self.normalize,
                      return_tensors="pt")["pixel_values"]  # [T, 3, s, s] float32 (uint8 without normalising)
        if not self.use_thumbnail and tiles.shape[0] > 1:
            tiles = tiles[:-1]  # the processor always appends the thumbnail last
        return tiles

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(tile_size={self.tile_size}, max_tiles={self.max_tiles}, "
                f"min_tiles={self.min_tiles}, use_thumbnail={self.use_thumbnail}, normalize={self.normalize})")


class DirectResize:
    """SAM2's preprocessing: squash the image to ``target_length`` x ``target_length`` (PIL bicubic, no padding)."""

    def __init__(self, target_length: int):
        self.target_length = int(target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """``uint8 [H, W, 3]`` -> ``uint8 [S, S, 3]``."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"DirectResize expects a uint8 HxWx3 array, got {image.dtype} {tuple(image.shape)}")
        size = (self.target_length, self.target_length)
        return np.array(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))  # writable copy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_length={self.target_length})"


def sam2_image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> SAM2 input ``uint8 [3, size, size]`` (normalisation happens in the model)."""
    resized = DirectResize(size).apply_image(np.asarray(image.convert("RGB")))  # [S, S, 3]
    return torch.from_numpy(resized).permute(2, 0, 1).contiguous()
