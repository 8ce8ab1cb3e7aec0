"""Turn request images (packed tensors or encoded files) into a model-ready batch.

numpy and Pillow only; the checks here produce the INVALID_ARGUMENT messages
a client sees, so each says what was expected.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from tfclassify.common.image_files import (
    ENCODED_FORMATS,
    SERVER_MAX_FILE_PIXELS,
    SERVER_MAX_REQUEST_FILE_PIXELS,
    ConversionSpec,
    ImageDecodeError,
    files_array,
)
from tfclassify.common.image_files import decode_image as decode_file
from tfclassify.server.core.errors import InvalidInputError

#: The encoded formats requests may carry; Pillow opens many more, each one more parser facing the network.
ACCEPTED_FORMATS = ENCODED_FORMATS
#: Limits on files sent whole (``tfclassify.common.image_files``, where clients read them too).
MAX_FILE_PIXELS = SERVER_MAX_FILE_PIXELS
MAX_REQUEST_FILE_PIXELS = SERVER_MAX_REQUEST_FILE_PIXELS
# Files declaring more than Pillow's MAX_IMAGE_PIXELS warn when opened; the declared size is refused before
# any decoding here, so the warning would only let clients fill the server's log.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def describe_layouts(shape: tuple[int, int, int]) -> str:
    """The batch layouts accepted for images of ``shape`` (height, width, channels), for error messages."""
    height, width, channels = shape
    flat = f"[N, {height * width * channels}]"
    if channels == 1:
        return f"[N, {height}, {width}], [N, {height}, {width}, 1] or {flat}"
    return f"[N, {height}, {width}, {channels}] or {flat}"


def check_image_batch(images: np.ndarray, shape: tuple[int, int, int], max_images: int) -> np.ndarray:
    """Validate ``images`` for a model taking images of ``shape`` (height, width, channels) and return them as
    ``[N, height, width, channels]`` (a view, no copy).

    Accepts ``[N, H, W, C]`` and flattened ``[N, H*W*C]``, and for grayscale models also ``[N, H, W]``.
    """
    height, width, channels = shape
    got = images.shape
    n = got[0] if images.ndim >= 1 else 0
    accepted = [(n, height, width, channels), (n, height * width * channels)]
    if channels == 1:
        accepted.append((n, height, width))
    if got not in accepted:
        hint = ""
        if images.ndim == 4 and got[1:3] == (height, width) and got[3] in (1, 3, 4):
            hint = f" (the model takes {channels}-channel images; these have {got[3]})"
        raise InvalidInputError(f"images have shape {list(got)}; expected {describe_layouts(shape)}{hint}")
    check_batch_size(n, max_images)
    return images.reshape(n, height, width, channels)


def check_batch_size(n: int, max_images: int) -> None:
    """Reject empty batches and batches over the configured maximum."""
    if n == 0:
        raise InvalidInputError("the request holds no images; send a batch of 1 or more")
    if n > max_images:
        raise InvalidInputError(
            f"the request holds {n} images; at most {max_images} per request are accepted "
            "(split the batch, or raise --max-images-per-request)"
        )


def decode_images(encoded: list[bytes], spec: ConversionSpec, max_images: int) -> np.ndarray:
    """Decode PNG/JPEG files into a uint8 batch ``[N, height, width, channels]`` as ``spec`` says (resized to the
    model's size as it declares), after checking every file's header against the pixel limits."""
    check_file_headers(encoded, max_images, spec.max_pixels, MAX_REQUEST_FILE_PIXELS)
    batch = np.empty((len(encoded), spec.height, spec.width, spec.channels), dtype=np.uint8)
    for i, data in enumerate(encoded):
        batch[i] = decode_image(data, spec, f"image {i}")
    return batch


def decode_image(data: bytes, spec: ConversionSpec, what: str = "image") -> np.ndarray:
    """Decode one PNG/JPEG file into uint8 pixels ``[height, width, channels]`` of ``spec``, as clients convert files
    (``tfclassify.common.image_files``: EXIF orientation, transparency on white, 16-bit and CMYK converted, resized
    per the model's declared preprocessing); ``what`` names it in errors.

    Only PNG and JPEG are opened, and the size the file declares is checked before any pixel is decoded:
    a decompression bomb (a small file declaring a huge image) costs a header read, not its pixels.
    """
    try:
        pixels = decode_file(data, spec, only=ACCEPTED_FORMATS)
    except ImageDecodeError as exc:
        raise InvalidInputError(f"{what}: {exc}") from None
    return pixels.reshape(spec.height, spec.width, spec.channels)


def check_encoded_images(encoded: list[bytes], max_images: int, max_pixels: int = MAX_FILE_PIXELS,
                         max_total_pixels: int = MAX_REQUEST_FILE_PIXELS) -> np.ndarray:
    """Check files for a model that decodes them in its graph, reading only their headers (``check_file_headers``).
    Returns them untouched, as an object array ``[N]``."""
    check_file_headers(encoded, max_images, max_pixels, max_total_pixels)
    return files_array(encoded)


def check_file_headers(encoded: list[bytes], max_images: int, max_pixels: int, max_total_pixels: int,
                       names: list[str] | None = None) -> None:
    """Refuse, from their headers only, files that are not PNG or JPEG, that declare more than ``max_pixels``
    pixels each, or more than ``max_total_pixels`` together (``names``: what errors call them; "image i")."""
    check_batch_size(len(encoded), max_images)
    total = 0
    for i, data in enumerate(encoded):
        what = names[i] if names else f"image {i}"
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
                width, height = img.size
        except Image.DecompressionBombError as exc:
            raise InvalidInputError(f"{what}: {exc}") from None
        except UnidentifiedImageError:
            raise InvalidInputError(f"{what}: {len(data)} bytes are not a PNG or JPEG file (the formats "
                                    "accepted)") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed headers
            raise InvalidInputError(f"{what}: cannot read {len(data)} bytes as PNG/JPEG: {exc}") from None
        if width * height > max_pixels:
            raise InvalidInputError(f"{what} declares {width}x{height} pixels, over the {max_pixels:,} accepted "
                                    "per file")
        total += width * height
        if total > max_total_pixels:
            raise InvalidInputError(f"the first {i + 1} images declare {total:,} pixels, over the {max_total_pixels:,} "
                                    f"one request may hold: send at most {max(i, 1)} of these per request")


def sample_png(pixels: np.ndarray) -> bytes:
    """``pixels`` (uint8 ``[H, W]`` or ``[H, W, C]``) as a PNG file, for probing models that take files."""
    out = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels).save(out, "PNG")
    return out.getvalue()


