"""Images -> model inputs: InternVL tiles and the SAM2 square image.

* :class:`TileProcessor`: InternVL dynamic tiling (reference §1.5). It delegates to transformers'
  ``GotOcr2ImageProcessorPil`` (the PIL backend of the InternVL ``-hf`` image processor, ``crop_to_patches``),
  which reproduces the original ``dynamic_preprocess`` exactly: same grid choice including the tie rule, PIL
  bicubic resizes, row-major crops, thumbnail last; pixel-identical tiles (tests/data/test_tiling.py compares
  against the reference algorithm). The torchvision backend of that processor resizes differently and is not used.
  With ``normalize=False`` the tiles stay uint8 pixels and :func:`normalize_tiles` turns them into the model's
  input on its device (the model does this for uint8 ``pixel_values``): half a loader worker's CPU time per
  sample and a 4x smaller batch to pin and copy; the values are identical.
  ``resize_backend='torch'`` makes the same tiles with torch's uint8 bicubic antialiased resize instead of PIL's:
  ~3x faster per image (13 tiles of a 640x480 image: 56 -> 19 ms on one core), pixels within 2-4 levels of PIL's
  and ~0.2-1 % of them different at all (up to ~17 levels where a very thin image is upsampled ~15x). Not the
  original's pixels, so off by default.
* :func:`num_tiles_for_size`: the tile count from the image size alone (for the sampler's lengths).
* :class:`DirectResize` / :func:`sam2_image_tensor`: SAM2's input, a non-aspect-preserving bicubic square resize.
* :func:`tokens_per_tile` / :func:`prompt_grid_size`: how many LLM tokens a tile becomes.
"""
from __future__ import annotations

import functools
import importlib
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_BACKENDS = ("pil", "torch")


def _check_backend(backend: str) -> str:
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f"resize_backend must be one of {RESIZE_BACKENDS}, got {backend!r}")
    return backend


def torch_bicubic_resize(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> uint8 ``[3, height, width]``: bicubic with antialiasing, torch's uint8 CPU kernel,
    which follows PIL's bicubic filter: within 2-4 levels of PIL's pixels for photo-like sizes, 0.2-1 % of them
    different at all; up to ~17 levels under extreme upsampling (a 30x700 image to 448-px tiles)
    (tests/data/test_tiling.py)."""
    return F.interpolate(pixels[None], size=(height, width), mode="bicubic", antialias=True)[0]


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
                 normalize: bool = True, resize_backend: str = "pil"):
        self.normalize = bool(normalize)
        self.resize_backend = _check_backend(resize_backend)
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
        if self.resize_backend == "torch":
            return self._torch_tiles(image.convert("RGB"))
        tiler = _tiler(self.tile_size, self.max_tiles, self.min_tiles)
        tiles = tiler(images=image.convert("RGB"), do_rescale=self.normalize, do_normalize=self.normalize,
                      return_tensors="pt")["pixel_values"]  # [T, 3, s, s] float32 (uint8 without normalising)
        if not self.use_thumbnail and tiles.shape[0] > 1:
            tiles = tiles[:-1]  # the processor always appends the thumbnail last
        return tiles

    def _torch_tiles(self, image: Image.Image) -> torch.Tensor:
        """The processor's tiling (its grid choice, row-major crops, thumbnail last) with torch resizes."""
        s = self.tile_size
        # the PIL processor's own grid choice (tie rule included), from the module that defines it
        get_optimal_tiled_canvas = importlib.import_module(type(_tiler(s, 1, 1)).__module__).get_optimal_tiled_canvas
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # [3, H, W] uint8
        cols, rows = get_optimal_tiled_canvas(tuple(pixels.shape[1:]), (s, s), self.min_tiles, self.max_tiles)
        canvas = torch_bicubic_resize(pixels, rows * s, cols * s)  # [3, rows*s, cols*s]
        tiles = canvas.view(3, rows, s, cols, s).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, s, s)
        if self.use_thumbnail and rows * cols > 1:
            tiles = torch.cat([tiles, torch_bicubic_resize(pixels, s, s)[None]])
        return normalize_tiles(tiles) if self.normalize else tiles.contiguous()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(tile_size={self.tile_size}, max_tiles={self.max_tiles}, "
                f"min_tiles={self.min_tiles}, use_thumbnail={self.use_thumbnail}, normalize={self.normalize}, "
                f"resize_backend={self.resize_backend!r})")


class DirectResize:
    """SAM2's preprocessing: squash the image to ``target_length`` x ``target_length`` (bicubic, no padding): PIL's
    filter (the original), or with ``resize_backend='torch'`` torch's uint8 antialiased bicubic (~3x faster, within
    2 levels of PIL's pixels: :func:`torch_bicubic_resize`)."""

    def __init__(self, target_length: int, resize_backend: str = "pil"):
        self.target_length = int(target_length)
        self.resize_backend = _check_backend(resize_backend)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """``uint8 [H, W, 3]`` -> ``uint8 [S, S, 3]``."""
        return self.chw_tensor(image).permute(1, 2, 0).numpy()

    def chw_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``uint8 [H, W, 3]`` -> ``uint8 [3, S, S]`` (contiguous), SAM2's input layout."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"DirectResize expects a uint8 HxWx3 array, got {image.dtype} {tuple(image.shape)}")
        side = self.target_length
        if self.resize_backend == "torch":
            return torch_bicubic_resize(_read_only_tensor(image).permute(2, 0, 1), side, side).contiguous()
        resized = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))
        return _read_only_tensor(resized).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_length={self.target_length}, resize_backend={self.resize_backend!r})"


def sam2_image_tensor(image: Image.Image, size: int, resize_backend: str = "pil") -> torch.Tensor:
    """PIL image -> SAM2 input ``uint8 [3, size, size]`` (normalisation happens in the model)."""
    return DirectResize(size, resize_backend).chw_tensor(np.asarray(image.convert("RGB")))


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a (possibly read-only) array that is only read: no copy, no warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
