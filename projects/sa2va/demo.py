"""Assets of the zero-setup demo: tiny models + synthetic data, written on first use."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from mmengine.logging import MMLogger

_MARKER = "demo_assets.json"
# Bump when the tiny models or the synthetic data change, so that sets written by older code are rewritten.
# 2: the tiny InternViT starts with sine-cosine positions instead of zeros.
# 3: each synthetic image is drawn from its own seed (seed, index), in parallel.
_ASSETS_VERSION = 3


def make_demo_assets(root: str | os.PathLike, seed: int = 0, num_images: int = 48, internvl: dict | None = None,
                     sam2: dict | None = None) -> dict:
    """Write ``root/{tiny_internvl, tiny_sam2, data}`` unless a complete set with these arguments exists.
    ``internvl`` / ``sam2``: model sizes (see :func:`sa2va.tiny_models.make_tiny_models`).

    Safe to call from every rank of a fresh multi-process launch: a file lock lets one process write the set
    while the others wait and then read its marker."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _make_unlocked(root, seed, num_images, internvl, sam2)


def _make_unlocked(root: Path, seed: int, num_images: int, internvl: dict | None, sam2: dict | None) -> dict:
    from .datasets.synthetic import make_synthetic_data
    from .tiny_models import make_tiny_models

    marker = root / _MARKER
    wanted = {"version": _ASSETS_VERSION, "seed": seed, "num_images": num_images}
    if internvl or sam2:
        wanted.update(internvl=internvl or {}, sam2=sam2 or {})
    if marker.is_file() and json.loads(marker.read_text()).get("args") == wanted:
        return json.loads(marker.read_text())["paths"]
    logger = MMLogger.get_current_instance()
    logger.info(f"writing demo assets (tiny models + {num_images} synthetic images) to {root}")
    paths = make_tiny_models(root, seed=seed, internvl=internvl, sam2=sam2)
    paths.update({f"data_{k}": str(v) for k, v in make_synthetic_data(root / "data", seed=seed,
                                                                      num_images=num_images).items()})
    marker.write_text(json.dumps({"args": wanted, "paths": paths}, indent=1))
    return paths
