"""Turn request images (packed tensors or encoded files) into a model-ready batch.

numpy and Pillow only; the checks here produce the INVALID_ARGUMENT messages
a client sees, so each says what was expected.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from tfclassify.server.errors import InvalidInputError

#: The encoded formats requests may carry; Pillow opens many more, each one more parser facing the network.
ACCEPTED_FORMATS = ("PNG", "JPEG")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# Files declaring more than Pillow's MAX_IMAGE_PIXELS warn when opened; the declared size is refused before
# any decoding here, so the warning would only let clients fill the server's log.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_image_batch(images: np.ndarray, height: int, width: int, max_images: int) -> np.ndarray:
    """Validate ``images`` and return it as ``[N, height, width]`` (a view, no copy).

    Accepts ``[N, H, W]``, ``[N, H, W, 1]`` and ``[N, H*W]``.
    """
    shape = images.shape
    n = shape[0] if images.ndim >= 1 else 0
    accepted = f"[N, {height}, {width}], [N, {height}, {width}, 1] or [N, {height * width}]"
    if shape not in ((n, height, width), (n, height, width, 1), (n, height * width)):
        raise InvalidInputError(f"images have shape {list(shape)}; expected {accepted}")
    check_batch_size(n, max_images)
    return images.reshape(n, height, width)


def check_batch_size(n: int, max_images: int) -> None:
    """Reject empty batches and batches over the configured maximum."""
    if n == 0:
        raise InvalidInputError("the request holds no images; send a batch of 1 or more")
    if n > max_images:
        raise InvalidInputError(
            f"the request holds {n} images; at most {max_images} per request are accepted "
            "(split the batch, or raise --max-images-per-request)"
        )


def decode_images(encoded: list[bytes], height: int, width: int, max_images: int) -> np.ndarray:
    """Decode PNG/JPEG files into a uint8 batch ``[N, height, width]`` (grayscale)."""
    check_batch_size(len(encoded), max_images)
    batch = np.empty((len(encoded), height, width), dtype=np.uint8)
    for i, data in enumerate(encoded):
        batch[i] = decode_image(data, height, width, f"image {i}")
    return batch


def decode_image(data: bytes, height: int, width: int, what: str = "image") -> np.ndarray:
    """Decode one PNG/JPEG file into uint8 pixels ``[height, width]`` (grayscale); ``what`` names it in errors.

    Only PNG and JPEG are opened, and the size the file declares is checked before any pixel is decoded:
    a decompression bomb (a small file declaring a huge image) costs a header read, not its pixels.
    """
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
            if img.size != (width, height):
                raise InvalidInputError(
                    f"{what} is {img.size[0]}x{img.size[1]} pixels; the model takes {width}x{height} (no resizing is done)"
                )
            gray = img.convert("L")
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as exc:  # raised while reading the header, before any pixel
        raise InvalidInputError(f"{what}: {exc}; the model takes {width}x{height} pixels (no resizing is done)") from None
    except UnidentifiedImageError:
        raise InvalidInputError(f"{what}: {len(data)} bytes are not a PNG or JPEG file (the formats accepted)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed files; each is the client's input
        raise InvalidInputError(f"{what}: cannot decode {len(data)} bytes as PNG/JPEG: {exc}") from None
    return np.asarray(gray, dtype=np.uint8)


def is_encoded_image(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG or JPEG file."""
    return data.startswith((PNG_SIGNATURE, JPEG_SIGNATURE))
