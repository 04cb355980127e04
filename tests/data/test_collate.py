"""sa2va_collate_fn against docs/batch_layout.md."""
import pytest
import torch

from sa2va.datasets import IGNORE_INDEX, sa2va_collate_fn


def _item(n_tokens, tiles=None, masks=None, regions=None, text_only=False, record="rec"):
    ids = torch.arange(1, n_tokens + 1)
    item = dict(input_ids=ids, labels=torch.where(ids % 2 == 0, ids, torch.full_like(ids, IGNORE_INDEX)),
                length=-n_tokens if text_only else n_tokens, frames_per_batch=1, data_source="toy", record_id=record)
    if tiles:
        item["pixel_values"] = torch.randn(tiles, 3, 112, 112)
    if masks:
        item["masks"] = torch.ones(masks, 30, 40, dtype=torch.uint8)
        item["g_pixel_values"] = torch.zeros(3, 256, 256, dtype=torch.uint8)
    if regions:
        item["prompt_masks"] = torch.ones(regions, 4, 4, dtype=torch.uint8)
    return item


def test_shapes_and_padding():
    batch = [_item(5, tiles=3, masks=2), _item(8, text_only=True), _item(3, tiles=1, regions=2)]
    out = sa2va_collate_fn(batch, pad_token_id=7)
    assert set(out) == {"data", "data_samples"} and out["data_samples"] is None
    data = out["data"]
    assert set(data) == {"input_ids", "labels", "attention_mask", "position_ids", "pixel_values", "num_tiles",
                         "g_pixel_values", "masks", "prompt_masks", "frames_per_batch", "data_issues"}
    assert data["input_ids"].shape == data["labels"].shape == (3, 8)
    assert data["input_ids"].dtype == data["labels"].dtype == data["position_ids"].dtype == torch.long
    assert data["attention_mask"].dtype == torch.bool
    assert (data["input_ids"][0, 5:] == 7).all() and (data["labels"][0, 5:] == IGNORE_INDEX).all()
    assert torch.equal(data["input_ids"][0, :5], batch[0]["input_ids"])
    assert torch.equal(data["labels"][2, :3], batch[2]["labels"])
    assert data["attention_mask"].sum(1).tolist() == [5, 8, 3]
    assert data["attention_mask"][0, :5].all() and not data["attention_mask"][0, 5:].any()
    assert torch.equal(data["position_ids"], torch.arange(8).expand(3, 8))
    assert data["pixel_values"].shape == (4, 3, 112, 112)
    assert torch.equal(data["pixel_values"][:3], batch[0]["pixel_values"])
    assert torch.equal(data["pixel_values"][3:], batch[2]["pixel_values"])
    assert data["num_tiles"] == [3, 0, 1]
    assert data["g_pixel_values"][0].shape == (3, 256, 256) and data["g_pixel_values"][1:] == [None, None]
    assert data["masks"][0].shape == (2, 30, 40) and data["masks"][1:] == [None, None]
    assert data["prompt_masks"][:2] == [None, None] and data["prompt_masks"][2].shape == (2, 4, 4)
    assert data["frames_per_batch"] == [1, 1, 1]


def test_text_only_batch_and_single_item():
    data = sa2va_collate_fn([_item(4, text_only=True)])["data"]
    assert data["pixel_values"] is None and data["num_tiles"] == [0]
    assert data["input_ids"].shape == (1, 4) and data["attention_mask"].all()


def test_sam2_image_dropped_without_masks():
    item = _item(4, tiles=1)
    item["g_pixel_values"] = torch.zeros(3, 256, 256, dtype=torch.uint8)
    assert sa2va_collate_fn([item])["data"]["g_pixel_values"] == [None]


def test_errors_name_the_record():
    bad = _item(4, tiles=1, record="refcoco/instances.json#3")
    bad["masks"] = torch.ones(1, 5, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match="refcoco/instances.json#3: has masks but no g_pixel_values"):
        sa2va_collate_fn([bad])
    short = _item(4, record="a.json#1")
    short["labels"] = short["labels"][:3]
    with pytest.raises(ValueError, match="a.json#1"):
        sa2va_collate_fn([short])
    a, b = _item(4, tiles=1, record="a"), _item(4, record="b")
    b["pixel_values"] = torch.zeros(1, 3, 448, 448)
    with pytest.raises(ValueError, match="different shapes"):
        sa2va_collate_fn([a, b])
    b["pixel_values"] = torch.zeros_like(a["pixel_values"], dtype=torch.uint8)  # one dataset with uint8_tiles only
    with pytest.raises(ValueError, match=r"different dtypes.*uint8_tiles.*'b': 'torch.uint8'"):
        sa2va_collate_fn([a, b])


def test_per_item_lists_share_one_storage_and_keep_their_values():
    """Each per-item list is copied into one storage (one file descriptor when a worker sends the batch):
    same shapes, dtypes and values, None kept."""
    from torch.utils.data import DataLoader

    from sa2va.datasets.collate import in_one_storage

    torch.manual_seed(0)
    tensors = [torch.randint(0, 2, (2, 30, 40), dtype=torch.uint8), None, torch.randint(0, 2, (1, 7, 9),
               dtype=torch.uint8), torch.rand(3, 5), torch.rand(2, 2).t()]  # mixed dtypes, one non-contiguous
    out = in_one_storage(tensors)
    assert out[1] is None
    for a, b in zip(tensors, out):
        if a is not None:
            assert b.shape == a.shape and b.dtype == a.dtype and torch.equal(a, b)
    assert out[0].untyped_storage().data_ptr() == out[2].untyped_storage().data_ptr()  # the uint8 ones
    assert out[3].untyped_storage().data_ptr() == out[4].untyped_storage().data_ptr()  # the float ones
    assert out[0].untyped_storage().data_ptr() != out[3].untyped_storage().data_ptr()

    batch = [_item(5, tiles=1, masks=2), _item(6, tiles=1, masks=3), _item(3, tiles=1, regions=2)]
    for i, item in enumerate(batch):
        if "masks" in item:
            item["masks"] = torch.randint(0, 2, item["masks"].shape, dtype=torch.uint8)
            item["g_pixel_values"] = torch.full((3, 256, 256), i, dtype=torch.uint8)
    direct = sa2va_collate_fn(batch)["data"]
    assert direct["masks"][0].untyped_storage().data_ptr() == direct["masks"][1].untyped_storage().data_ptr()
    # through a worker process: the same batch arrives
    loader = DataLoader(batch, batch_size=3, num_workers=1, collate_fn=sa2va_collate_fn)
    received = next(iter(loader))["data"]
    for key in ("g_pixel_values", "masks", "prompt_masks"):
        for a, b in zip(direct[key], received[key]):
            assert (a is None and b is None) or torch.equal(a, b)
