"""Turn an image file's bytes into the model's input: 8-bit grayscale pixels ``[H, W]``.

Every step is Pillow's:

1. open the file (any format Pillow reads: PNG, JPEG, BMP, GIF, TIFF, WebP, ...)
   and read only its header; refuse an image declaring more than
   ``max_pixels`` pixels (a decompression bomb) before anything is decoded;
2. take the first frame; composite transparent pixels onto white;
3. convert to grayscale (``L``, ITU-R 601-2 luma);
4. resize to the model's input size with an antialiasing (Lanczos) filter,
   when it differs (JPEGs are first decoded at a reduced scale, which is faster);
5. invert, per ``invert``: MNIST-family models expect light ink on a dark
   background, while scans and photos of paper are dark on light. ``auto``
   inverts an image whose border (the outermost ring of pixels, after the
   resize) is light on average: mean above 127.5 of 255.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

INVERT_CHOICES = ("auto", "yes", "no")
#: Larger than any photo or scan people score (a 48-megapixel phone photo is 48M);
#: Pillow's own warning starts at 89M.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024


_SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}


class ImageDecodeError(ValueError):
    """A file that cannot be turned into model input; the message is the reason recorded for it."""


@dataclass(frozen=True)
class ConversionSpec:
    """How files become model input: target size, inversion rule and the pixel limit."""

    height: int = 28
    width: int = 28
    invert: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.invert not in INVERT_CHOICES:
            raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {self.invert!r}")


def decode_image(data: bytes, spec: ConversionSpec, formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Decode one file's ``data`` into uint8 pixels ``[spec.height, spec.width]`` (steps 1-4; ``apply_invert`` does 5).

    ``formats`` (e.g. ``("PNG",)``, from the file name) is tried alone when the bytes start like it.
    """
    if not data:
        raise ImageDecodeError("empty file")
    if formats is not None and not data.startswith(_SIGNATURES.get(formats[0], b"")):
        formats = None  # the name lies: let Pillow recognise the content
    try:
        # No context manager: the source is in memory, and closing a loaded image discards its pixels.
        img = Image.open(io.BytesIO(data), formats=formats)
        width, height = img.size
        if width * height > spec.max_pixels:
            raise ImageDecodeError(_bomb_message(f"{width}x{height} pixels", spec.max_pixels))
        if img.format == "JPEG":
            img.draft("L", (spec.width, spec.height))
        gray = _to_grayscale(img)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, checked inside open()
        raise ImageDecodeError(f"image declares too many pixels (a decompression bomb?): not decoded ({exc})") from exc
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (no format that Pillow reads recognises it)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow signals truncated and corrupt files with these.
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc
    if gray.size != (spec.width, spec.height):
        gray = gray.resize((spec.width, spec.height), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def apply_invert(batch: np.ndarray, invert: str) -> np.ndarray:
    """Apply the ``invert`` rule (``auto``, ``yes`` or ``no``) to uint8 images ``[N, H, W]``, in place."""
    if invert == "yes":
        np.subtract(255, batch, out=batch)
    elif invert == "auto" and len(batch):
        light = light_border(batch)
        batch[light] = 255 - batch[light]
    return batch


def light_border(batch: np.ndarray) -> np.ndarray:
    """Per image of ``[N, H, W]``: whether the mean of its outermost ring of pixels is above mid-grey."""
    n, h, w = batch.shape
    totals = batch.reshape(n, -1).sum(axis=1, dtype=np.int64)
    if h < 3 or w < 3:
        return totals / (h * w) > 127.5
    inner = batch[:, 1:-1, 1:-1].reshape(n, -1).sum(axis=1, dtype=np.int64)
    return (totals - inner) / (2 * (h + w) - 4) > 127.5


def _bomb_message(declared: str, limit: int) -> str:
    return f"image declares {declared}, more than the limit of {limit:,} pixels (a decompression bomb?): not decoded"


def _to_grayscale(img: Image.Image) -> Image.Image:
    # A freshly opened image is on its first frame (animations, multi-page TIFFs).
    if img.mode == "L":
        img.load()
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits rather than clip.
        array = np.asarray(img, dtype=np.float64)
        top = float(array.max()) or 1.0
        return Image.fromarray((array * (255.0 / top)).round().astype(np.uint8))
    return img.convert("L")
