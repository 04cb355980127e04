"""Overlay pictures: masks blended on the image, each labelled with its phrase."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def draw_overlay(image: Image.Image, masks, labels: Sequence[str | None] = (), alpha: float = 0.45,
                 caption: str | None = None) -> Image.Image:
    """``image`` with each mask (``[N, H, W]``, any non-zero is foreground) tinted in its own colour, its outline
    drawn and its label written at the mask's top-left corner; ``caption`` (optional) in a bar at the bottom."""
    base = np.asarray(image.convert("RGB")).astype(np.float32)  # [H, W, 3]
    masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if masks.ndim == 2:
        masks = masks[None]
    masks = masks.cpu().numpy() != 0  # [N, H, W] bool
    if masks.shape[0] and masks.shape[1:] != base.shape[:2]:
        raise ValueError(f"masks are {masks.shape[1:]} but the image is {base.shape[:2]} (H, W)")
    for k, m in enumerate(masks):
        colour = np.array(PALETTE[k % len(PALETTE)], dtype=np.float32)
        base[m] = (1 - alpha) * base[m] + alpha * colour
        edge = m & ~_erode(m)
        base[edge] = colour
    out = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for k, m in enumerate(masks):
        label = labels[k] if k < len(labels) else None
        if not label or not m.any():
            continue
        ys, xs = np.nonzero(m)
        _text_box(draw, (int(xs.min()), max(0, int(ys.min()) - 12)), label, PALETTE[k % len(PALETTE)], font)
    if caption:
        width, height = out.size
        text = _wrap(caption, max(10, width // 6))
        canvas = Image.new("RGB", (width, height + 14 * (text.count("\n") + 1) + 4), (0, 0, 0))
        canvas.paste(out, (0, 0))
        ImageDraw.Draw(canvas).multiline_text((4, height + 2), text, fill=(255, 255, 255), font=font)
        out = canvas
    return out


def _erode(m: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (4-neighbourhood), image borders count as background."""
    p = np.pad(m, 1)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _text_box(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, colour, font) -> None:
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=colour)
    draw.text(xy, text, fill=(255, 255, 255), font=font)


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])
