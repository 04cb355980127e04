"""Synthetic data in the real on-disk formats (tests and the demo).

``make_synthetic_data(out_dir, seed, num_images)`` draws images of coloured shapes and writes them with referring
expressions ("the red circle on the left") as

* ``ref_seg/refcoco/{instances.json, refs(unc).p}``: splits train / val / testA / testB;
* ``ref_seg/refcocog/{instances.json, refs(umd).p}``: splits train / val / test;
* ``coco2014/train2014/*``: the images (mostly 640x480 JPEGs, plus other sizes, one grayscale JPEG, one RGBA PNG);
* ``osprey/osprey_{conversation,detail_description,short_form}.json``: Osprey-724K-style region data on the same images;
* ``custom/{annotations.json, images/}``: the Sa2VA fine-tune json (``image``, ``mask``, ``text``).

Segmentations are polygons (a "star" is two overlapping triangles, i.e. two parts), and every fifth object is a crowd
annotation stored as RLE, alternately compressed (``counts`` str) and uncompressed (``counts`` list). The last image
is in ``instances.json`` but has no refs. Every object is centred near a sample point of the nearest 4x4 and 16x16
prompt grids, so region masks are never empty on the thumbnail grid of the tiny (112 px) or the real (448 px) tiles.
Everything is a pure function of ``seed``; image ``i`` (its pixels and objects) of ``(seed, i)`` alone, so images are
drawn in parallel processes for large sets and a larger set starts with the images of a smaller one.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

__all__ = ["draw_scene", "make_synthetic_data"]

COLOURS = {
    "red": (215, 35, 35), "green": (35, 150, 60), "blue": (40, 70, 215),
    "yellow": (230, 205, 40), "purple": (135, 50, 165), "orange": (240, 135, 20),
}
SHAPES = ("circle", "square", "triangle", "rectangle", "star")
HPOS = ("left", "middle", "right")
VPOS = ("top", "center", "bottom")
IMAGE_DIR = "coco2014/train2014"


# ----------------------------------------------------------------------------------------------- geometry
def _shape_polygons(shape: str, cx: float, cy: float, r: float) -> list[list[float]]:
    """Polygon parts (flat xy lists) of a shape centred at (cx, cy) with radius r."""
    def ring(n, rx, ry, phase=0.0):
        t = phase + 2 * np.pi * np.arange(n) / n
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)

    if shape == "circle":
        parts = [ring(24, r, r)]
    elif shape == "square":
        parts = [ring(4, r, r, np.pi / 4)]
    elif shape == "rectangle":
        parts = [np.array([[cx - r, cy - 0.55 * r], [cx + r, cy - 0.55 * r], [cx + r, cy + 0.55 * r],
                           [cx - r, cy + 0.55 * r]])]
    elif shape == "triangle":
        parts = [ring(3, r, r, -np.pi / 2)]
    elif shape == "star":  # two overlapping triangles: a two-part object whose parts overlap
        parts = [ring(3, r, r, -np.pi / 2), ring(3, r, r, np.pi / 2)]
    else:
        raise ValueError(shape)
    return [np.round(p, 2).reshape(-1).tolist() for p in parts]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths over the column-major flattening, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def _image_specs(num_images: int) -> list[dict]:
    """Size / colour mode / format of each image: mostly 640x480 JPEG, a few others."""
    specs = []
    for i in range(num_images):
        spec = dict(width=640, height=480, mode="RGB", ext="jpg")
        if i % 8 == 3:
            spec.update(width=480, height=640)
        elif i % 8 == 6:
            spec.update(width=500, height=375)
        elif i % 12 == 10:
            spec.update(width=448, height=448)
        if i == 5 % num_images:
            spec["mode"] = "L"
        if i == 9 % num_images:
            spec.update(mode="RGBA", ext="png")
        specs.append(spec)
    return specs


def _a(word: str) -> str:
    return ("An " if word[0] in "aeiou" else "A ") + word


def _where(h: str) -> str:
    return "in the middle" if h == "middle" else f"on the {h}"


def _sentences(colour: str, shape: str, h: str, v: str, long: bool) -> list[str]:
    where = _where(h)
    if long:
        return [f"{_a(colour)} {shape} located at the {v} {h} of the picture.",
                f"The {colour} {shape} that is {where}, near the {v}."]
    return [f"The {colour} {shape} {where}.", f"{colour} {shape}", f"the {shape} at the {v} {h}"]


# ----------------------------------------------------------------------------------------------- scene
def draw_scene(rng: np.random.Generator, spec: dict) -> tuple[Image.Image, list[dict]]:
    """One image of ``spec`` (``width``, ``height``, PIL ``mode``): a noisy light background with 2-4 shapes of
    distinct colours in distinct cells of a 3x3 grid. Returns the image and, per shape, ``colour``, ``shape``,
    ``hpos``, ``vpos`` and its ``polygons`` (COCO layout, pixel coordinates)."""
    w, h = spec["width"], spec["height"]
    base = rng.integers(150, 245, size=3)
    noise = rng.standard_normal(size=(h, w, 3), dtype=np.float32) * 6
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)  # [H, W, 3] noisy background
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    n_obj = int(rng.integers(2, 5))
    slots = rng.choice(9, size=n_obj, replace=False)
    colours = rng.choice(list(COLOURS), size=n_obj, replace=False)
    step_x, step_y = w / 4, h / 4
    objects = []
    for k in range(n_obj):
        hi, vi = int(slots[k]) % 3, int(slots[k]) // 3
        r = float(rng.uniform(0.28, 0.45) * min(step_x, step_y))  # no overlap between neighbouring slots
        cx = step_x * (hi + 1) + rng.uniform(-r / 4, r / 4)
        cy = step_y * (vi + 1) + rng.uniform(-r / 4, r / 4)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        polys = _shape_polygons(shape, cx, cy, r)
        for p in polys:
            draw.polygon([(p[j], p[j + 1]) for j in range(0, len(p), 2)], fill=COLOURS[colours[k]])
        objects.append(dict(colour=str(colours[k]), shape=shape, hpos=HPOS[hi], vpos=VPOS[vi], polygons=polys))
    image = image.convert(spec["mode"])
    return image, objects


def _write_image(task: tuple[int, int, dict, str]) -> list[dict]:
    """Draw image ``index`` of ``seed`` and save it to ``path``; returns its objects."""
    seed, index, spec, path = task
    image, objects = draw_scene(np.random.default_rng([seed, index]), spec)
    image.save(path, **({"quality": 92} if spec["ext"] == "jpg" else {}))
    return objects


def _write_images(seed: int, specs: list[dict], paths: list[Path]) -> list[list[dict]]:
    """Objects of every image, in order; images are written by a process pool when there are many."""
    tasks = [(seed, i, spec, str(path)) for i, (spec, path) in enumerate(zip(specs, paths))]
    workers = min(os.cpu_count() or 1, 16, len(tasks) // 64)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_write_image(t) for t in tasks]
    # fork: the workers only need numpy / PIL, and a spawned worker would re-import the caller's modules
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_write_image, tasks, chunksize=16)


def _annotation(ann_id: int, image_id: int, obj: dict, h: int, w: int, crowd_style: str | None) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects(obj["polygons"], h, w))
    area = float(mask_utils.area(rle))
    bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
    if crowd_style is None:
        segmentation, iscrowd = obj["polygons"], 0
    elif crowd_style == "compressed":
        segmentation, iscrowd = dict(size=[h, w], counts=rle["counts"].decode("ascii")), 1
    else:
        segmentation, iscrowd = _uncompressed_rle(mask_utils.decode(rle)), 1
    return dict(id=ann_id, image_id=image_id, category_id=SHAPES.index(obj["shape"]) + 1,
                segmentation=segmentation, area=area, bbox=bbox, iscrowd=iscrowd)


def _split_of(order: np.ndarray, names: tuple[str, ...], fractions: tuple[float, ...]) -> dict[int, str]:
    """Assign images (by position in ``order``) to splits; every split gets at least one image."""
    n = len(order)
    counts = [max(1, int(round(f * n))) for f in fractions[1:]]
    counts = [n - sum(counts)] + counts
    out, start = {}, 0
    for name, c in zip(names, counts):
        for i in order[start:start + c]:
            out[int(i)] = name
        start += c
    return out


def _anns_by_image(anns: list[dict]) -> dict[int, list[dict]]:
    """image id -> its annotations, in annotation order."""
    out: dict[int, list[dict]] = {}
    for a in anns:
        out.setdefault(a["image_id"], []).append(a)
    return out


def _write_refer(out: Path, name: str, split_by: str, images: list[dict], anns: list[dict],
                 anns_of: dict[int, list[dict]], scene_objs: dict, splits: dict[int, str], long_sentences: bool,
                 rng: np.random.Generator) -> None:
    refs, ref_id, sent_id = [], 0, 0
    image_by_id = {im["id"]: im for im in images}
    for ann in anns:
        image_id = ann["image_id"]
        if image_id not in splits:  # the image without refs
            continue
        obj = scene_objs[ann["id"]]
        if not long_sentences and rng.random() < 0.2 and ann["id"] != anns_of[image_id][0]["id"]:
            continue  # not every object is referred to (but each image keeps at least one ref)
        sentences = []
        for raw in _sentences(obj["colour"], obj["shape"], obj["hpos"], obj["vpos"], long_sentences):
            sent = " ".join(raw.lower().replace(",", " ,").replace(".", " ").split())
            sentences.append(dict(raw=raw, sent=sent, tokens=sent.split(), sent_id=sent_id))
            sent_id += 1
        image = image_by_id[image_id]
        refs.append(dict(ref_id=ref_id, ann_id=ann["id"], image_id=image_id, split=splits[image_id],
                         sentences=sentences, sent_ids=[s["sent_id"] for s in sentences],
                         category_id=ann["category_id"],
                         file_name=f"{Path(image['file_name']).stem}_{ann['id']}.jpg"))
        ref_id += 1
    root = out / "ref_seg" / name
    root.mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=s, supercategory="shape") for i, s in enumerate(SHAPES)]
    with open(root / "instances.json", "w") as f:
        json.dump(dict(images=images, annotations=anns, categories=categories), f)
    with open(root / f"refs({split_by}).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)


def _osprey_entries(images: list[dict], anns_of: dict[int, list[dict]], scene_objs: dict,
                    rng: np.random.Generator):
    conv, detail, short = [], [], []
    for im in images:
        regions = anns_of.get(im["id"], [])
        objs = [scene_objs[a["id"]] for a in regions]
        base = dict(id=im["id"], file_name=im["file_name"], height=im["height"], width=im["width"],
                    annotation=[dict(segmentation=a["segmentation"], bbox=a["bbox"], area=a["area"],
                                     category_id=a["category_id"]) for a in regions])
        turns = []
        for i, o in enumerate(objs):
            region = f"<region{i + 1}>"
            if rng.random() < 0.5:
                q, a = f"What colour is {region}?", f"{region} is {o['colour']}."
            else:
                q = f"Which shape is {region} and where is it?"
                a = f"It is a {o['shape']} {_where(o['hpos'])}, near the {o['vpos']}."
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        conv.append(dict(base, conversations=turns))
        detail.append(dict(base, description=[
            f"{_a(o['colour'])} {o['shape']} {_where(o['hpos'])} of the image, close to the {o['vpos']}; "
            f"it is flat, with sharp edges." for o in objs]))
        short_turns = []
        for i, o in enumerate(objs):
            short_turns += [{"from": "human", "value": f"What shape is <region{i + 1}>?"},
                            {"from": "gpt", "value": o["shape"]}]
        short.append(dict(base, conversations=short_turns))
    return conv, detail, short


def make_synthetic_data(out_dir: str | os.PathLike, seed: int = 0, num_images: int = 24) -> dict[str, str]:
    """Write the synthetic data sets under ``out_dir`` (see the module docstring); returns the main paths."""
    if num_images < 6:
        raise ValueError(f"num_images must be >= 6 (one image per split plus one without refs), got {num_images}")
    out = Path(out_dir)
    img_dir = out / IMAGE_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    specs = _image_specs(num_images)
    file_names = [f"COCO_train2014_{i + 1:012d}.{spec['ext']}" for i, spec in enumerate(specs)]
    objects_of = _write_images(seed, specs, [img_dir / name for name in file_names])
    images, anns, scene_objs, ann_id = [], [], {}, 1
    for i, (spec, file_name, objects) in enumerate(zip(specs, file_names, objects_of)):
        image_id = i + 1
        images.append(dict(id=image_id, file_name=file_name, height=spec["height"], width=spec["width"]))
        for obj in objects:
            crowd = None if ann_id % 5 else ("compressed" if ann_id % 10 else "uncompressed")
            anns.append(_annotation(ann_id, image_id, obj, spec["height"], spec["width"], crowd))
            scene_objs[ann_id] = obj
            ann_id += 1

    anns_of = _anns_by_image(anns)
    with_refs = np.array([im["id"] for im in images[:-1]])  # the last image gets no refs
    refcoco_splits = _split_of(rng.permutation(with_refs), ("train", "val", "testA", "testB"),
                               (0.6, 0.16, 0.12, 0.12))
    refcocog_splits = _split_of(rng.permutation(with_refs), ("train", "val", "test"), (0.64, 0.18, 0.18))
    _write_refer(out, "refcoco", "unc", images, anns, anns_of, scene_objs, refcoco_splits, False, rng)
    _write_refer(out, "refcocog", "umd", images, anns, anns_of, scene_objs, refcocog_splits, True, rng)

    osprey = out / "osprey"
    osprey.mkdir(parents=True, exist_ok=True)
    for name, entries in zip(("conversation", "detail_description", "short_form"),
                             _osprey_entries(images, anns_of, scene_objs, rng)):
        with open(osprey / f"osprey_{name}.json", "w") as f:
            json.dump(entries, f)

    custom = out / "custom"
    (custom / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for im in images[: max(4, num_images // 3)]:
        src = Image.open(img_dir / im["file_name"])
        name = f"img_{im['id']:04d}.jpg"
        if src.format == "JPEG" and src.mode == "RGB":
            shutil.copyfile(img_dir / im["file_name"], custom / "images" / name)  # re-encoding is the slow part
        else:
            src.convert("RGB").save(custom / "images" / name, quality=92)
        objs = [(a, scene_objs[a["id"]]) for a in anns_of.get(im["id"], [])]
        records.append(dict(image=name, mask=[o["polygons"] for _, o in objs],
                            text=[_sentences(o["colour"], o["shape"], o["hpos"], o["vpos"], False)[0]
                                  for _, o in objs]))
    with open(custom / "annotations.json", "w") as f:
        json.dump(records, f)

    return dict(root=str(out), image_dir=str(img_dir),
                refcoco=str(out / "ref_seg" / "refcoco"), refcocog=str(out / "ref_seg" / "refcocog"),
                osprey=str(osprey), custom=str(custom))
