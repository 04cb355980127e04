"""OspreyDataset / OspreyDescriptionDataset / OspreyShortDescriptionDataset on the synthetic Osprey json."""
from __future__ import annotations

import json

import pytest
import torch

from sa2va.datasets.encoding import IGNORE_INDEX
from sa2va.datasets.masks import to_prompt_grid
from sa2va.datasets.osprey import OspreyDataset, OspreyDescriptionDataset, OspreyShortDescriptionDataset
from sa2va.datasets.text import DETAILED_QUESTIONS, SHORT_ANSWER_LIMIT

TPT = 16
FILES = {OspreyDataset: "osprey_conversation.json", OspreyDescriptionDataset: "osprey_detail_description.json",
         OspreyShortDescriptionDataset: "osprey_short_form.json"}


def _make(cls, synthetic, common, path=None, folders=None, **kwargs):
    folders = folders if folders is not None else [synthetic["root"] + "/missing", synthetic["image_dir"]]
    return cls(path or f"{synthetic['osprey']}/{FILES[cls]}", folders, **common, **kwargs)


def _supervised(item, tokenizer):
    sup = (item["labels"] != IGNORE_INDEX).tolist() + [False]
    out, start = [], None
    for i, s in enumerate(sup):
        if s and start is None:
            start = i
        elif not s and start is not None:
            out.append(tokenizer.decode(item["input_ids"][start:i]))
            start = None
    return out


def _user_texts(item, tokenizer):
    text = tokenizer.decode(item["input_ids"])
    users = [seg.split("<|im_end|>")[0] for seg in text.split("<|im_start|>user\n")[1:]]
    return text, users


@pytest.mark.parametrize("cls", list(FILES))
def test_region_items_follow_the_contract(cls, synthetic, common, coco_decode, region_token_counts, token_ids,
                                          tiny_tokenizer):
    with open(f"{synthetic['osprey']}/{FILES[cls]}") as f:
        entries = json.load(f)
    ds = _make(cls, synthetic, common, seed=0)
    assert len(ds) == len(entries) and len(ds.lengths) == len(ds)
    for i in range(0, len(ds), 3):
        item, entry = ds[i], entries[i]
        h, w = entry["height"], entry["width"]
        gt = torch.stack([to_prompt_grid(coco_decode(a["segmentation"], h, w)[None], 4)[0]
                          for a in entry["annotation"]])
        pm = item["prompt_masks"]
        assert torch.equal(pm, gt) and pm.dtype == torch.uint8
        assert region_token_counts(item["input_ids"]) == pm.flatten(1).sum(1).tolist()
        assert int((item["input_ids"] == token_ids["<IMG_CONTEXT>"]).sum()) == \
            item["pixel_values"].shape[0] * TPT + int(pm.sum())
        assert "masks" not in item and "g_pixel_values" not in item
        text, users = _user_texts(item, tiny_tokenizer)
        assert users[0].startswith("<img>")
        assert f"</img>\nThere are {len(pm)} part regions in the picture: region1<vp>" in users[0]
        assert "<region" not in text and "<image>" not in text
        # only the answers are supervised, in order
        answers = _supervised(item, tiny_tokenizer)
        if cls is OspreyDescriptionDataset:
            assert answers == [d + "<|im_end|>" for d in entry["description"]]
            for r, u in enumerate(users):
                question = u.split(".\n", 1)[1] if r == 0 else u
                assert question in {q.replace("<region>", f"region{r + 1}") for q in DETAILED_QUESTIONS}
        else:
            gpt = [m["value"].replace("<region", "region").replace(">", "") for m in entry["conversations"]
                   if m["from"] == "gpt"]
            assert answers == [a + "<|im_end|>" for a in gpt]
            limit = SHORT_ANSWER_LIMIT if cls is OspreyShortDescriptionDataset else ""
            humans = [m["value"].replace("<image>\n", "").replace("<region", "region").replace(">", "") + limit
                      for m in entry["conversations"] if m["from"] == "human"]
            assert [u.split(".\n", 1)[1] if r == 0 else u for r, u in enumerate(users)] == humans


def test_only_region_markers_lose_their_brackets(synthetic, common, tmp_path, tiny_tokenizer):
    with open(f"{synthetic['osprey']}/osprey_conversation.json") as f:
        entries = json.load(f)[:1]
    entries[0]["conversations"] = [
        {"from": "human", "value": "<image>\nIs <region1> bigger than < region2 >? Compare a<b and <b>x</b>."},
        {"from": "gpt", "value": "Yes: size(<Region1>) > size(region2), i.e. 3 > 2."},
    ]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(entries))
    item = _make(OspreyDataset, synthetic, common, path=str(path))[0]
    text, users = _user_texts(item, tiny_tokenizer)
    assert users[0].endswith("Is region1 bigger than region2? Compare a<b and <b>x</b>.")
    assert _supervised(item, tiny_tokenizer) == ["Yes: size(region1) > size(region2), i.e. 3 > 2.<|im_end|>"]


def test_image_folder_first_hit_and_single_folder(synthetic, common, tmp_path):
    from PIL import Image

    with open(f"{synthetic['osprey']}/osprey_conversation.json") as f:
        entry = json.load(f)[0]
    # a different picture of the same size under the same name in an earlier folder wins
    first = tmp_path / "first"
    first.mkdir()
    Image.new("RGB", (entry["width"], entry["height"]), (0, 0, 0)).save(first / entry["file_name"])
    ds = _make(OspreyDataset, synthetic, common, folders=[str(first), synthetic["image_dir"]])
    single = _make(OspreyDataset, synthetic, common, folders=synthetic["image_dir"])
    a, b = ds[0]["pixel_values"], single[0]["pixel_values"]
    assert a.shape == b.shape and not torch.equal(a, b)
    assert a.std(dim=(0, 2, 3)).max() < 1e-6  # the black image was used
