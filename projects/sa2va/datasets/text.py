"""Natural-language side of the image datasets: question/answer lists (data, verbatim from the original) and
text normalisation.

``SEG_QUESTIONS`` / ``ANSWER_LIST``: referring segmentation (glamm utils, reference §2.1).
``DETAILED_QUESTIONS``: Osprey detailed description (reference §2.2). ``SHORT_ANSWER_LIMIT``: Osprey short form.
``REGION_CAPTION_QUESTION``: the region-caption prompt of the RefCOCOg evaluation (reference §5.3).
"""
from __future__ import annotations

import re
import unicodedata

__all__ = [
    "SEG_QUESTIONS",
    "ANSWER_LIST",
    "DETAILED_QUESTIONS",
    "SHORT_ANSWER_LIMIT",
    "REGION_CAPTION_QUESTION",
    "IMAGE_PLACEHOLDER",
    "clean_text",
    "normalize_phrase",
    "strip_region_markers",
    "remove_image_placeholder",
]

SEG_QUESTIONS = [
    "Can you segment the {class_name} in this image?",
    "Please segment {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
    "Can you segment the {class_name} in this image",
    "Please segment {class_name} in this image",
    "What is {class_name} in this image? Please respond with segmentation mask",
    "What is {class_name} in this image? Please output segmentation mask",
    "Could you provide a segmentation mask for the {class_name} in this image?",
    "Please identify and segment the {class_name} in this image.",
    "Where is the {class_name} in this picture? Please respond with a segmentation mask.",
    "Can you highlight the {class_name} in this image with a segmentation mask?",
    "Could you provide a segmentation mask for the {class_name} in this image",
    "Please identify and segment the {class_name} in this image",
    "Where is the {class_name} in this picture? Please respond with a segmentation mask",
    "Can you highlight the {class_name} in this image with a segmentation mask",
]

ANSWER_LIST = [
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
]

DETAILED_QUESTIONS = [
    "Can you provide me with a detailed description of the region in the picture marked by <region>?",
    "I'm curious about the region represented by <region> in the picture. Could you describe it in detail?",
    "What can you tell me about the region indicated by <region> in the image?",
    "I'd like to know more about the area in the photo labeled <region>. Can you give me a detailed description?",
    "Could you describe the region shown as <region> in the picture in great detail?",
    "What details can you give me about the region outlined by <region> in the photo?",
    "Please provide me with a comprehensive description of the region marked with <region> in the image.",
    "Can you give me a detailed account of the region labeled as <region> in the picture?",
    "I'm interested in learning more about the region represented by <region> in the photo. "
    "Can you describe it in detail?",
    "What is the region outlined by <region> in the picture like? Could you give me a detailed description?",
    "Can you provide me with a detailed description of the region in the picture marked by <region>, please?",
    "I'm curious about the region represented by <region> in the picture. Could you describe it in detail, please?",
    "What can you tell me about the region indicated by <region> in the image, exactly?",
    "I'd like to know more about the area in the photo labeled <region>, please. "
    "Can you give me a detailed description?",
    "Could you describe the region shown as <region> in the picture in great detail, please?",
    "What details can you give me about the region outlined by <region> in the photo, please?",
    "Please provide me with a comprehensive description of the region marked with <region> in the image, please.",
    "Can you give me a detailed account of the region labeled as <region> in the picture, please?",
    "I'm interested in learning more about the region represented by <region> in the photo. "
    "Can you describe it in detail, please?",
    "What is the region outlined by <region> in the picture like, please? Could you give me a detailed description?",
    "Please describe the region <region> in the image in detail.",
    "Can you offer a thorough analysis of the region <region> in the image?",
    "Could you elaborate on the region highlighted by <region> in the picture provided?",
    "Please share more information about the zone emphasized with <region> in the photo.",
    "What insights can you give about the area denoted by <region> in the image presented?",
    "Can you share a comprehensive rundown of the region denoted by <region> in the presented image?",
    "I'd like to know more about the region highlighted by <region> in the picture provided.",
    "Work through the important details of the area <region> in the image.",
    "Illustrate the area represented by <region> through a descriptive explanation.",
    "Examine the region <region> closely and share its details.",
]

SHORT_ANSWER_LIMIT = " Answer the question using a single word or phrase."

REGION_CAPTION_QUESTION = "Please give me a short description of the region in the picture marked by region{index}."

IMAGE_PLACEHOLDER = "<image>"

_REGION_MARKER = re.compile(r"<\s*(region\d+)\s*>", re.IGNORECASE)
_IMAGE_PLACEHOLDER = re.compile(r"\s*<image>\s*")
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unicode NFKC, control and zero-width characters removed, whitespace runs -> one space, stripped.

    NFKC folds compatibility forms (no-break spaces, full-width letters, ligatures) into plain ones; format
    characters (zero-width space/joiner, BOM, bidi marks) are dropped; tabs and newlines become spaces.
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if ch.isspace() else ch for ch in text
                   if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf"))
    return _WHITESPACE.sub(" ", text).strip()


def normalize_phrase(text: str) -> str:
    """A referring expression as the segmentation questions use it: :func:`clean_text`, lower case, without one
    trailing period (the original: ``text.lower()`` and strip one trailing ``'.'``)."""
    phrase = clean_text(text).lower()
    if phrase.endswith("."):
        phrase = phrase[:-1].rstrip()
    return phrase


def strip_region_markers(text: str) -> str:
    """``<region3>`` -> ``region3``; every other character is kept (the original removed every ``<`` and ``>``)."""
    return _REGION_MARKER.sub(lambda m: m.group(1).lower(), text)


def remove_image_placeholder(text: str) -> str:
    """Drop ``<image>`` placeholders (and the whitespace around them); the dataset re-adds the image itself."""
    return _IMAGE_PLACEHOLDER.sub(" ", text).strip()
