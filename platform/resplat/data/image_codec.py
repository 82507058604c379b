"""Decoding source images and encoding them the way FFCV's RGB image field stores them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# FFCV's RGBImageField modes (ffcv/fields/rgb_image.py: IMAGE_MODES).
FFCV_MODE_JPEG = 0
FFCV_MODE_RAW = 1


def target_size(width: int, height: int, max_resolution: int | None) -> tuple[int, int]:
    """(width, height) after capping the longest side at max_resolution."""
    if max_resolution is None or max(width, height) <= max_resolution:
        return width, height
    ratio = max_resolution / max(width, height)
    return max(1, int(width * ratio)), max(1, int(height * ratio))


def shrink_to_longest_side(pixels: np.ndarray, max_resolution: int | None) -> np.ndarray:
    """Resize (area interpolation) so the longest side is at most max_resolution."""
    height, width = pixels.shape[:2]
    size = target_size(width, height, max_resolution)
    if size == (width, height):
        return pixels
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def load_rgb(path: Path, max_resolution: int | None = None) -> np.ndarray:
    """Decode an image file into a C-contiguous HxWx3 uint8 array (longest side capped).

    Raises whatever PIL raises for unreadable, truncated or corrupt files.
    """
    with Image.open(path) as image:
        size = target_size(*image.size, max_resolution)
        if image.format == "JPEG" and size[0] * 2 <= image.size[0] and size[1] * 2 <= image.size[1]:
            # libjpeg can decode at 1/2, 1/4 or 1/8 scale (no smaller than asked),
            # several times faster than a full decode of a large photo.
            image.draft(None, size)
        # convert() forces the complete decode, so damaged data fails here.
        rgb = image.convert("RGB")
    pixels = np.asarray(rgb, dtype=np.uint8)
    if (pixels.shape[1], pixels.shape[0]) != size:
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(pixels)


def encode_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """JPEG bytes (as a flat uint8 array) of an RGB image."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    )
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the image")
    return encoded.reshape(-1)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header only, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 - unreadable files are reported by the writer
        return None
