"""Turn an image file's bytes into the model's input: uint8 pixels ``[H, W]`` (one-channel models) or
``[H, W, C]`` (colour models, C = 3 for RGB or 4 for RGBA).

Every step is Pillow's, except the colour resize:

1. open the file (any format Pillow reads: PNG, JPEG, BMP, GIF, TIFF, WebP, ...)
   and read only its header; refuse an image declaring more than
   ``max_pixels`` pixels (a decompression bomb) before anything is decoded;
2. take the first frame (animated GIFs, multi-page TIFFs) and turn it upright
   per its EXIF orientation (``ImageOps.exif_transpose``: phone photos);
3. convert to the model's channels:

   - one channel: grayscale (``L``, ITU-R 601-2 luma); transparent pixels composited onto white;
     16-bit images scaled so their brightest pixel is 255 (as before colour models were served);
   - colour: RGB (or RGBA for C = 4, alpha kept); for RGB, transparent pixels composited onto
     white; grayscale and palette images expanded to RGB; CMYK converted to RGB (through the
     file's ICC profile when it has one); 16-bit images divided by 257 (65535 -> 255);

4. resize to the model's input size, per ``resize`` (``RESIZE_CHOICES``), ``crop_fraction`` and ``interpolation``:
   ``stretch`` (the default) scales each side to the model's, ignoring the aspect ratio, as Keras'
   ``image_dataset_from_directory`` does; ``crop`` first cuts the largest centred region with
   the model's aspect ratio (Keras' ``crop_to_aspect_ratio=True``); ``pad`` first extends the image
   to that aspect ratio with black borders, centred (Keras' ``pad_to_aspect_ratio=True``; for
   one-channel models the border takes the colour of the image's own edge, so ``invert`` still
   judges its background). ``crop_fraction`` below 1 then keeps only that central fraction of each
   side (``tf.image.central_crop``; ImageNet evaluation's 224-of-256 is 0.875). The filter
   (``INTERPOLATIONS``): by default colour images use TensorFlow's bilinear resize without
   antialiasing (``tf.image.resize``'s default, the one Keras training pipelines use), computed
   here in numpy, from the fully decoded file; one-channel images keep the antialiasing Lanczos
   filter they always had (JPEGs first decoded at a reduced scale, which is faster). A model may
   declare another: ``bilinear`` and ``nearest`` are TensorFlow's, computed exactly in numpy;
   ``bicubic``, ``area`` and ``lanczos3`` are Pillow's antialiasing filters (close to
   ``tf.image.resize(..., antialias=True)``, not bit-identical);
5. one-channel only, invert per ``invert``: MNIST-family models expect light ink on a dark
   background, while scans and photos of paper are dark on light. ``auto`` inverts an image whose
   border (the outermost ring of pixels, after the resize) is light on average: mean above 127.5.

Models that decode files in their graph (``channels`` 0) get the files' bytes untouched:
``check_encoded`` only reads their header.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

INVERT_CHOICES = ("auto", "yes", "no")
RESIZE_CHOICES = ("stretch", "crop", "pad")
#: Resize filters a model may declare; None in a spec: bilinear for colour, Lanczos for one channel.
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3")
_PILLOW_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX,
                   "lanczos3": Image.Resampling.LANCZOS}
#: Larger than any photo or scan people score (a 48-megapixel phone photo is 48M);
#: Pillow's own warning starts at 89M.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
#: What a model that decodes files in its graph is sent (the server accepts these, as TensorFlow decodes them).
ENCODED_FORMATS = ("PNG", "JPEG")
#: The most pixels a server takes in one file sent whole (4096 x 4096), and in all the files of one request (five
#: 12-megapixel photos; 1,300 of 224 x 224): whether the server decodes and resizes them or the model's graph
#: does, each is decoded whole. Clients decode larger files themselves.
SERVER_MAX_FILE_PIXELS = 2**24
SERVER_MAX_REQUEST_FILE_PIXELS = 2**26


_SIGNATURES = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}


def is_png_or_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG or JPEG file (the formats sent whole: ``ENCODED_FORMATS``)."""
    return data.startswith(tuple(_SIGNATURES.values()))
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I", "F")


class ImageDecodeError(ValueError):
    """A file that cannot be turned into model input; the message is the reason recorded for it."""


@dataclass(frozen=True)
class ConversionSpec:
    """How files become model input: target size and channels, resize and inversion rules, the pixel limit."""

    height: int = 28
    width: int = 28
    invert: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: 1: grayscale ``[H, W]``; 3: RGB ``[H, W, 3]``; 4: RGBA ``[H, W, 4]``; 0: the files' bytes, untouched.
    channels: int = 1
    resize: str = "stretch"
    #: The resize filter (``INTERPOLATIONS``); None: bilinear for colour, Lanczos for one channel.
    interpolation: str | None = None
    #: The central fraction of each side kept after the aspect step (1: all of it).
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be above 0 and at most 1, got {self.crop_fraction}")
        if self.invert not in INVERT_CHOICES:
            raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {self.invert!r}")
        if self.resize not in RESIZE_CHOICES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_CHOICES)}, got {self.resize!r}")
        if self.channels not in (0, 1, 3, 4):
            raise ValueError(f"channels must be 0, 1, 3 or 4, got {self.channels}")

    @property
    def shape(self) -> tuple[int, ...]:
        """One decoded image's shape."""
        if self.channels == 1:
            return (self.height, self.width)
        return (self.height, self.width, self.channels)

    def describe(self) -> dict:
        """What a run record keeps, so that a report decodes its thumbnails the same way."""
        described = {"height": self.height, "width": self.width, "channels": self.channels, "resize": self.resize}
        if self.interpolation is not None:
            described["interpolation"] = self.interpolation
        if self.crop_fraction != 1.0:
            described["crop_fraction"] = self.crop_fraction
        return described


def decode_image(data: bytes, spec: ConversionSpec, formats: tuple[str, ...] | None = None,
                 only: tuple[str, ...] | None = None) -> np.ndarray:
    """Decode one file's ``data`` into uint8 pixels ``spec.shape`` (steps 1-4; ``apply_invert`` does 5).

    ``formats`` (e.g. ``("PNG",)``, from the file name) is tried alone when the bytes start like it;
    ``only`` (e.g. ``("PNG", "JPEG")``) refuses any other format, unparsed.
    """
    with _pillow_errors():
        img = _open(data, spec, only or formats, strict=bool(only))
        if spec.channels == 1:
            if spec.interpolation is not None:  # a declared filter: the same arithmetic as for colour
                gray = np.asarray(_to_grayscale(_upright(img)), dtype=np.uint8)[..., None]
                return _resize_colour(gray, spec)[..., 0]
            if img.format == "JPEG" and spec.crop_fraction == 1.0:
                side = max(spec.width, spec.height)  # either way up: the orientation is applied after
                img.draft("L", (side, side))
            return _resize_gray(_to_grayscale(_upright(img)), spec)
        return _resize_colour(np.asarray(_to_colour(_upright(img), spec.channels), dtype=np.uint8), spec)


def check_encoded(data: bytes, spec: ConversionSpec) -> bytes:
    """``data`` untouched, when its header says it is a PNG or JPEG file within the pixel limit (for a model that
    decodes files in its graph); ``ImageDecodeError`` otherwise. Nothing is decoded."""
    with _pillow_errors():
        img = _open(data, spec, None)
        if img.format not in ENCODED_FORMATS:
            raise ImageDecodeError(f"a {img.format} file: the model decodes files in its graph and takes "
                                   f"{' or '.join(ENCODED_FORMATS)} files")
    return data


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Pillow's exceptions as ``ImageDecodeError`` with the reason recorded for the file."""
    try:
        yield
    except Image.DecompressionBombError as exc:  # Pillow's own limit, checked inside open()
        raise ImageDecodeError(f"image declares too many pixels (a decompression bomb?): not decoded ({exc})") from exc
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (no format that Pillow reads recognises it)") from None
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow signals truncated and corrupt files with these.
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from exc
    except MemoryError:  # one file's pixels, within the limit, that this process cannot hold: that file's failure
        raise ImageDecodeError("image too large to decode in the memory available") from None


def _open(data: bytes, spec: ConversionSpec, formats: tuple[str, ...] | None, strict: bool = False) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty file")
    if strict:
        assert formats, "strict: decode_image passes the formats of a non-empty only="
        if not data.startswith(tuple(_SIGNATURES[f] for f in formats)):
            raise ImageDecodeError(f"{len(data)} bytes are not a {' or '.join(formats)} file (the formats accepted)")
    elif formats is not None and not data.startswith(_SIGNATURES.get(formats[0], b"")):
        formats = None  # the name lies: let Pillow recognise the content
    # No context manager: the source is in memory, and closing a loaded image discards its pixels.
    img = Image.open(io.BytesIO(data), formats=formats)
    width, height = img.size
    if width * height > spec.max_pixels:
        raise ImageDecodeError(_bomb_message(f"{width}x{height} pixels", spec.max_pixels))
    return img


def _upright(img: Image.Image) -> Image.Image:
    """The first frame (a freshly opened image is on it), turned per its EXIF orientation tag."""
    try:
        if img.getexif().get(0x0112, 1) in (0, 1):
            return img
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels may still be fine, taken as they are
        return img
    transparency = img.info.get("transparency")
    upright = ImageOps.exif_transpose(img)
    if transparency is not None:
        upright.info["transparency"] = transparency
    return upright


def files_array(files) -> np.ndarray:
    """``files`` (bytes objects) as a 1-D object array: ``np.asarray`` would make fixed-width bytes, which drop
    trailing zero bytes, or a 2-D array of equal-length files."""
    array = np.empty(len(files), dtype=object)
    array[:] = list(files)
    return array


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


def resize_bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``[h, w, C]`` resized to ``[height, width, C]`` as ``tf.image.resize(..., "bilinear")`` does (half-pixel
    centres, no antialiasing), rounded to uint8. Separable: reads only the rows it needs."""
    rows, row_weight = _bilinear_taps(pixels.shape[0], height)
    cols, col_weight = _bilinear_taps(pixels.shape[1], width)
    top = pixels[rows[0]].astype(np.float32)
    tall = top + (pixels[rows[1]].astype(np.float32) - top) * row_weight[:, None, None]
    left = tall[:, cols[0]]
    out = left + (tall[:, cols[1]] - left) * col_weight[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _bilinear_taps(size: int, out: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """TensorFlow's interpolation weights: the two source indices and the weight of the second, per output index."""
    where = (np.arange(out, dtype=np.float32) + 0.5) * np.float32(size / out) - 0.5
    floor = np.floor(where)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(where), size - 1).astype(np.int64)
    return (lower, upper), (where - floor).astype(np.float32)


def _aspect_box(width: int, height: int, spec: ConversionSpec) -> tuple[int, int]:
    """(width, height) of the region with the model's aspect ratio: inside the image (crop) or around it (pad)."""
    wide = round(height * spec.width / spec.height)
    tall = round(width * spec.height / spec.width)
    if spec.resize == "crop":
        return min(width, max(1, wide)), min(height, max(1, tall))
    box_w, box_h = max(width, wide), max(height, tall)
    if box_w * box_h > spec.max_pixels:  # a sliver padded to the model's shape: refused before any canvas is made
        raise ImageDecodeError(_bomb_message(f"{width}x{height} pixels, {box_w}x{box_h} once padded to the model's "
                                             "aspect ratio", spec.max_pixels))
    return box_w, box_h


def _resize_colour(pixels: np.ndarray, spec: ConversionSpec) -> np.ndarray:
    height, width = pixels.shape[:2]
    if spec.resize != "stretch":
        box_w, box_h = _aspect_box(width, height, spec)
        if spec.resize == "crop":
            top, left = (height - box_h) // 2, (width - box_w) // 2
            pixels = pixels[top : top + box_h, left : left + box_w]
        else:
            canvas = np.zeros((box_h, box_w, pixels.shape[2]), dtype=np.uint8)
            top, left = (box_h - height) // 2, (box_w - width) // 2
            canvas[top : top + height, left : left + width] = pixels
            pixels = canvas
    if spec.crop_fraction != 1.0:
        left, top, right, bottom = _central(pixels.shape[1], pixels.shape[0], spec.crop_fraction)
        pixels = pixels[top:bottom, left:right]
    if pixels.shape[:2] == (spec.height, spec.width):
        return np.ascontiguousarray(pixels)
    if spec.interpolation in (None, "bilinear"):
        return resize_bilinear(pixels, spec.height, spec.width)
    if spec.interpolation == "nearest":
        return resize_nearest(pixels, spec.height, spec.width)
    planes = [Image.fromarray(np.ascontiguousarray(pixels[..., c])) for c in range(pixels.shape[2])]
    resized = [p.resize((spec.width, spec.height), _PILLOW_FILTERS[spec.interpolation]) for p in planes]
    return np.stack([np.asarray(p, dtype=np.uint8) for p in resized], axis=-1)


def resize_nearest(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``[h, w, C]`` resized to ``[height, width, C]`` as ``tf.image.resize(..., "nearest")`` does (half-pixel
    centres)."""
    rows = np.minimum(np.floor((np.arange(height) + 0.5) * (pixels.shape[0] / height)), pixels.shape[0] - 1)
    cols = np.minimum(np.floor((np.arange(width) + 0.5) * (pixels.shape[1] / width)), pixels.shape[1] - 1)
    return np.ascontiguousarray(pixels[rows.astype(np.int64)][:, cols.astype(np.int64)])


def _central(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the central ``fraction`` of each side, as ``tf.image.central_crop`` cuts it."""
    top = int((height - height * fraction) / 2)
    left = int((width - width * fraction) / 2)
    return left, top, width - left, height - top


def _resize_gray(gray: Image.Image, spec: ConversionSpec) -> np.ndarray:
    box = None
    if spec.resize != "stretch":
        box_w, box_h = _aspect_box(gray.width, gray.height, spec)
        left, top = (gray.width - box_w) // 2, (gray.height - box_h) // 2
        if spec.resize == "crop":
            box = (left, top, left + box_w, top + box_h)
        elif (box_w, box_h) != gray.size:
            canvas = Image.new("L", (box_w, box_h), _edge_mean(np.asarray(gray, dtype=np.uint8)))
            canvas.paste(gray, (-left, -top))
            gray = canvas
    if spec.crop_fraction != 1.0:
        outer = box or (0, 0, gray.width, gray.height)
        inner = _central(outer[2] - outer[0], outer[3] - outer[1], spec.crop_fraction)
        box = (outer[0] + inner[0], outer[1] + inner[1], outer[0] + inner[2], outer[1] + inner[3])
    if gray.size != (spec.width, spec.height) or box is not None:
        gray = gray.resize((spec.width, spec.height), Image.Resampling.LANCZOS, box=box)
    return np.asarray(gray, dtype=np.uint8)


def _edge_mean(pixels: np.ndarray) -> int:
    """The mean of the outermost ring of pixels: the background that ``invert`` judges."""
    ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return round(float(ring.mean()))


def _bomb_message(declared: str, limit: int) -> str:
    return f"image declares {declared}, more than the limit of {limit:,} pixels (a decompression bomb?): not decoded"


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _to_grayscale(img: Image.Image) -> Image.Image:
    if img.mode == "L":
        img.load()
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    if img.mode in _SIXTEEN_BIT:
        # 16/32-bit grayscale: scale to 8 bits rather than clip.
        array = np.asarray(img, dtype=np.float64)
        top = float(array.max()) or 1.0
        return Image.fromarray((array * (255.0 / top)).round().astype(np.uint8))
    return img.convert("L")


def _to_colour(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in _SIXTEEN_BIT:
        # 16-bit grayscale (PNG): full scale to 8 bits, the brightness a viewer shows.
        array = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(array.round(), 0, 255).astype(np.uint8))
    elif img.mode == "CMYK" and img.info.get("icc_profile"):
        img = _cmyk_through_profile(img)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        if channels == 4:
            return rgba
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGBA" if channels == 4 else "RGB")


def _cmyk_through_profile(img: Image.Image) -> Image.Image:
    """CMYK to sRGB through the file's embedded ICC profile; Pillow's plain conversion when that fails."""
    try:
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        converted = ImageCms.profileToProfile(img, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
        assert converted is not None  # None only with inPlace=True
        return converted
    except Exception:  # noqa: BLE001 - no littlecms, or a profile it cannot use: the plain formula is close
        return img.convert("RGB")
