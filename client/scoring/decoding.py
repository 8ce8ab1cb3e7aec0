"""Where a run decodes its files (``--decode client|server|auto``), and requests bounded by bytes.

``client``: the decoding workers turn every file into pixels at the model's size and channels, and the requests
carry uint8 arrays. ``server``: PNG and JPEG files go as they are, in the request's ``encoded`` field, and the
server decodes them to the model's size with the client's own code (``tfclassify.common.image_files``); files the
server does not take whole (other formats: GIF, BMP, TIFF, WebP ...; photos over ``SERVER_MAX_FILE_PIXELS``) are
decoded here and sent as pixels, in requests of their own. Some runs need the pixels here whatever was asked, and
are decoded in the client with a note saying why:

- ``--invert auto|yes`` with a one-channel (MNIST-style) model: inverting is the client's;
- a ``--resize`` other than the model's declared one: the server resizes the model's way.

A server older than ``--decode server`` (one that takes files only at the model's size) refuses other files:
score with ``--decode client`` against it.

``auto`` sends the smaller of the two: files to the server for models whose images take at least
``AUTO_SERVER_MIN_BYTES`` as pixels (224 x 224 x 3 is 147 KiB, several times a JPEG photo), pixels below that
(32 x 32 x 3 is 3 KiB, a tenth of the file). ``make bench-colour`` measures both ways (docs/results.md): on 2 cores
shared by scorer and server, the server's decoding was the faster for MobileNetV3 at 224 x 224 and the slower for
a 32 x 32 CNN, as the rule has it.
"""

from __future__ import annotations

import numpy as np

from tfclassify.client.requests import byte_slices, pixel_slices
from tfclassify.client.results import ModelInfo

#: ``auto`` lets the server decode files for models whose images take at least this many bytes as uint8 pixels.
AUTO_SERVER_MIN_BYTES = 64 * 1024


def choose_decoding(model: ModelInfo, decode: str, invert: str, resize: str, asked_resize: str | None
                    ) -> tuple[bool, str | None]:
    """Whether PNG/JPEG files are sent to the server as they are for ``model``, and a one-line note when
    ``decode`` asked for the server but the files must be decoded here (``None`` otherwise).

    ``resize`` is the run's resize, ``asked_resize`` the one the user gave (None: the model's declared one).
    """
    if model.channels == 0 or decode == "client":  # a model that decodes files itself always gets them
        return False, None
    declared = model.preprocessing.get("resize") or "stretch"
    why = None
    if model.channels == 1 and invert != "no":
        why = (f"model {model.name!r} takes one-channel images and --invert {invert} needs their pixels "
               "(--invert no lets the server decode them)")
    elif resize != declared:
        why = (f"--resize {asked_resize} is not the model's declared resize ({declared}), which the server "
               "applies")
    if why is not None:
        return False, f"--decode server: files are decoded here: {why}" if decode == "server" else None
    if decode == "server":
        return True, None
    return image_bytes(model) >= AUTO_SERVER_MIN_BYTES, None


def image_bytes(model: ModelInfo) -> int:
    """Bytes of one of ``model``'s images as uint8 pixels (0 when its size is open)."""
    dims = model.input_shape
    if not dims or any(d <= 0 for d in dims):
        return 0
    return int(np.prod(dims)) * (model.channels if len(dims) == 2 and model.channels > 1 else 1)


def request_slices(images: np.ndarray, max_request_bytes: int) -> list[slice]:
    """Consecutive slices of a chunk's images (pixels ``[n, ...]``, or files as an object array) of at most
    ``max_request_bytes`` each; an image larger than that goes alone."""
    if images.dtype == object:
        return byte_slices([len(f) for f in images], max_request_bytes)
    return pixel_slices(images, max_request_bytes)
