"""The client's name for ``tfclassify.common.image_files``: how files become model input, shared with the server
(which decodes files the same way when a client sends them undecoded)."""

from tfclassify.common.image_files import (  # noqa: F401 - re-exported
    DEFAULT_MAX_PIXELS,
    ENCODED_FORMATS,
    INTERPOLATIONS,
    INVERT_CHOICES,
    RESIZE_CHOICES,
    SERVER_MAX_FILE_PIXELS,
    SERVER_MAX_REQUEST_FILE_PIXELS,
    ConversionSpec,
    ImageDecodeError,
    apply_invert,
    check_encoded,
    decode_image,
    files_array,
    light_border,
    resize_bilinear,
)
