"""InternVL tiling against the reference algorithm (reference §1.5), SAM2 resize, token-grid arithmetic."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from sa2va.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DirectResize,
    TileProcessor,
    num_tiles_for_size,
    prompt_grid_size,
    sam2_image_tensor,
    tokens_per_tile,
)
from sa2va.datasets.image_processing import normalize_tiles


# ------------------------------------------------------------------ the reference algorithm, as the oracle
def _reference_grid(width, height, tile, max_num=12, min_num=1):
    """Grids (i cols, j rows) with min <= i*j <= max, ordered as the original (a set, sorted by i*j); closest
    aspect ratio wins; on an exact tie the later grid wins only if w*h > 0.5 * tile^2 * i*j."""
    ratios = sorted({(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if min_num <= i * j <= max_num}, key=lambda r: r[0] * r[1])
    aspect, best_diff, best = width / height, float("inf"), (1, 1)
    for i, j in ratios:
        diff = abs(aspect - i / j)
        if diff < best_diff:
            best_diff, best = diff, (i, j)
        elif diff == best_diff and width * height > 0.5 * tile * tile * i * j:
            best = (i, j)
    return best


def _reference_tiles(image, tile=448, max_num=12, use_thumbnail=True):
    cols, rows = _reference_grid(*image.size, tile, max_num)
    resized = image.resize((tile * cols, tile * rows))  # PIL default resample (bicubic)
    crops = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
             for r in range(rows) for c in range(cols)]  # row-major
    if use_thumbnail and len(crops) > 1:
        crops.append(image.resize((tile, tile)))
    to_tensor = T.Compose([T.Resize((tile, tile), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return torch.stack([to_tensor(c.convert("RGB")) for c in crops])


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)  # blocky: content matters
    return Image.fromarray(base).resize((width, height), Image.Resampling.NEAREST)


@pytest.mark.parametrize("size, grid, tiles", [((640, 480), (4, 3), 13), ((640, 427), (3, 2), 7),
                                               ((640, 640), (2, 2), 5), ((448, 448), (1, 1), 1)])
def test_worked_examples(size, grid, tiles):
    assert _reference_grid(*size, 448) == grid
    assert num_tiles_for_size(*size) == tiles
    image = _image(*size)
    out = TileProcessor()(image)
    assert out.shape == (tiles, 3, 448, 448) and out.dtype == torch.float32
    ref = _reference_tiles(image)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert tiles * tokens_per_tile(448) == {13: 3328, 7: 1792, 5: 1280, 1: 256}[tiles]


def test_thumbnail_is_last_and_is_the_whole_image():
    image = _image(640, 480)
    out = TileProcessor()(image)
    thumb = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(image.resize((448, 448))))
    torch.testing.assert_close(out[-1], thumb, rtol=0, atol=1e-5)
    no_thumb = TileProcessor(use_thumbnail=False)(image)
    assert no_thumb.shape[0] == 12 and num_tiles_for_size(640, 480, use_thumbnail=False) == 12
    torch.testing.assert_close(no_thumb, out[:-1])


def test_tie_rule_and_grid_choice_everywhere():
    # 640x640 ties (1,1), (2,2), (3,3): area 409600 > 0.5*448^2*4 but not *9 -> (2,2); a 448x448 image stays (1,1)
    assert _reference_grid(640, 640, 448) == (2, 2) and _reference_grid(448, 448, 448) == (1, 1)
    for tile in (112, 448):
        for max_num in (1, 6, 12):
            for width in range(7, 1500, 37):
                for height in range(5, 1500, 41):
                    cols, rows = _reference_grid(width, height, tile, max_num)
                    expected = cols * rows + (cols * rows > 1)
                    assert num_tiles_for_size(width, height, tile, max_num) == expected, (width, height, tile)


@pytest.mark.parametrize("size, max_tiles", [((300, 1000), 12), ((1000, 300), 6), ((123, 456), 12), ((900, 450), 1)])
def test_content_small_tiles_and_other_shapes(size, max_tiles):
    image = _image(*size, seed=1)
    out = TileProcessor(tile_size=112, max_tiles=max_tiles)(image)
    torch.testing.assert_close(out, _reference_tiles(image, tile=112, max_num=max_tiles), rtol=0, atol=1e-5)
    assert out.shape[0] == TileProcessor(tile_size=112, max_tiles=max_tiles).num_tiles(*size)


def test_grayscale_and_rgba_are_converted():
    gray = _image(200, 100).convert("L")
    assert TileProcessor(tile_size=112)(gray).shape[1] == 3
    rgba = _image(200, 100).convert("RGBA")
    assert TileProcessor(tile_size=112)(rgba).shape[1] == 3


def test_token_grid_arithmetic():
    assert prompt_grid_size(448) == 16 and tokens_per_tile(448) == 256
    assert prompt_grid_size(112) == 4 and tokens_per_tile(112) == 16
    with pytest.raises(ValueError):
        prompt_grid_size(100)
    with pytest.raises(ValueError):
        TileProcessor(max_tiles=0)


def test_sam2_direct_resize():
    image = _image(640, 480)
    arr = DirectResize(256).apply_image(np.asarray(image))
    assert arr.shape == (256, 256, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, np.asarray(image.resize((256, 256), Image.Resampling.BICUBIC)))
    t = sam2_image_tensor(image, 256)
    assert t.shape == (3, 256, 256) and t.dtype == torch.uint8
    assert torch.equal(t, torch.from_numpy(arr).permute(2, 0, 1))
    with pytest.raises(ValueError):
        DirectResize(8).apply_image(np.zeros((4, 4), np.uint8))


def test_uint8_tiles_are_the_raw_pixels_and_normalise_to_the_float_tiles():
    """normalize=False keeps the crops' uint8 pixels; normalize_tiles gives exactly the float tiles."""
    from sa2va.datasets.image_processing import normalize_tiles

    image = _image(640, 480, seed=3)
    raw = TileProcessor(112, normalize=False)(image)
    assert raw.dtype == torch.uint8 and raw.shape == (13, 3, 112, 112)
    cols, rows = 4, 3
    resized = np.asarray(image.resize((112 * cols, 112 * rows), Image.Resampling.BICUBIC))
    assert torch.equal(raw[5], torch.from_numpy(resized[112:224, 112:224]).permute(2, 0, 1))  # row 1, col 1
    assert torch.equal(normalize_tiles(raw), TileProcessor(112)(image))
    with pytest.raises(TypeError, match="uint8"):
        normalize_tiles(raw.float())


@pytest.mark.parametrize("size", [(640, 480), (640, 427), (500, 375), (1000, 200), (448, 448), (30, 700)])
@pytest.mark.parametrize("tile, max_tiles", [(448, 12), (112, 12), (224, 1)])
def test_torch_resize_backend_makes_the_same_tiles_within_a_few_levels(size, tile, max_tiles):
    """resize_backend='torch': same grid, order and thumbnail; pixels within a few levels of PIL's."""
    image = _image(*size, seed=1)
    pil = TileProcessor(tile, max_tiles, normalize=False)(image)
    fast = TileProcessor(tile, max_tiles, normalize=False, resize_backend="torch")(image)
    assert fast.shape == pil.shape and fast.dtype == torch.uint8 and fast.is_contiguous()
    diff = (fast.int() - pil.int()).abs().float()
    thin = size == (30, 700)  # ~15x upsampling: the two bicubic kernels differ most
    assert diff.mean() < (0.2 if thin else 0.05) and diff.max() <= (24 if thin else 4), (diff.mean(), diff.max())
    normalized = TileProcessor(tile, max_tiles, resize_backend="torch")(image)
    assert normalized.dtype == torch.float32 and torch.equal(normalized, normalize_tiles(fast))
    no_thumb = TileProcessor(tile, max_tiles, use_thumbnail=False, normalize=False, resize_backend="torch")(image)
    assert torch.equal(no_thumb, fast[:-1] if fast.shape[0] > 1 else fast)


def test_torch_resize_backend_for_sam2_and_bad_backend():
    image = np.asarray(_image(640, 480))
    for side in (256, 1024):
        fast = DirectResize(side, resize_backend="torch").apply_image(image)
        assert fast.shape == (side, side, 3) and fast.dtype == np.uint8
        assert DirectResize(side, resize_backend="torch").chw_tensor(image).is_contiguous()
        assert np.abs(fast.astype(int) - DirectResize(side).apply_image(image).astype(int)).max() <= 2
    with pytest.raises(ValueError, match="resize_backend"):
        DirectResize(256, resize_backend="cv2")
    with pytest.raises(ValueError, match="resize_backend"):
        TileProcessor(resize_backend="opencv")
