"""What a model expects of its images when it does not do it in its graph, as declared in ``tfclassify.json``.

::

    {"preprocessing": {"resize": "crop", "crop_fraction": 0.875, "interpolation": "bilinear",
                       "scale": 0.00392156862745098, "offset": 0.0,
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "channel_order": "RGB"}}

Geometry, for any model taking pixels: how a file of another size becomes the model's size (``resize``:
stretch, crop or pad to the model's aspect ratio; then the central ``crop_fraction`` of each side; resized with
``interpolation``), applied by the server to the files it decodes and by clients to the files they prepare
(``tfclassify.common.image_files``). Arithmetic, for float-input models only: they get
``((pixels in channel_order) * scale + offset - mean) / std`` of uint8 pixels, per channel. Every key is optional
(``stretch``; 1; the channel's default filter; ``scale``: the older ``input_scale`` key, else 1/255; ``offset`` 0;
``mean`` 0; ``std`` 1; ``RGB``). Every API's metadata returns it, so a client can prepare inputs itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from tfclassify.common.image_files import INTERPOLATIONS, RESIZE_CHOICES

CHANNEL_ORDERS = ("RGB", "BGR")
#: Keys that change the pixels' values: only float inputs can take them (integer inputs get the pixels as sent).
ARITHMETIC_KEYS = ("scale", "offset", "mean", "std", "channel_order")
GEOMETRY_KEYS = ("resize", "crop_fraction", "interpolation")


@dataclass(frozen=True)
class Preprocessing:
    """A model's declared preprocessing (see the module's docstring)."""

    scale: float = 1.0 / 255
    offset: float = 0.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    channel_order: str = "RGB"
    resize: str = "stretch"
    crop_fraction: float = 1.0
    #: "" (not declared): bilinear for colour, Lanczos for one channel.
    interpolation: str = ""
    #: The arrays ``apply`` uses, computed once: (multiplier, addend) per channel, or scalars.
    _affine: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def declared(cls, metadata: dict, channels: int, default_scale: float) -> Preprocessing:
        """The preprocessing a version's ``tfclassify.json`` declares (``ValueError`` when it makes no sense for
        a model of ``channels`` channels)."""
        block = metadata.get("preprocessing") or {}
        if not isinstance(block, dict):
            raise ValueError("tfclassify.json: preprocessing must be an object")
        unknown = set(block) - {*ARITHMETIC_KEYS, *GEOMETRY_KEYS}
        if unknown:
            raise ValueError(f"tfclassify.json: unknown preprocessing keys {sorted(unknown)} "
                             f"(known: {', '.join((*GEOMETRY_KEYS, *ARITHMETIC_KEYS))})")
        resize = str(block.get("resize", "stretch"))
        interpolation = str(block.get("interpolation", ""))
        crop_fraction = block.get("crop_fraction", 1.0)
        if resize not in RESIZE_CHOICES:
            raise ValueError(f"tfclassify.json: preprocessing resize {resize!r}: expected {', '.join(RESIZE_CHOICES)}")
        if interpolation and interpolation not in INTERPOLATIONS:
            raise ValueError(f"tfclassify.json: preprocessing interpolation {interpolation!r}: expected "
                             f"{', '.join(INTERPOLATIONS)}")
        if (not isinstance(crop_fraction, (int, float)) or isinstance(crop_fraction, bool)
                or not 0 < crop_fraction <= 1):
            raise ValueError(f"tfclassify.json: preprocessing crop_fraction {crop_fraction!r}: expected a number "
                             "above 0 and at most 1 (the central share of each side kept)")
        scale = float(block.get("scale", metadata.get("input_scale", default_scale)))
        mean, std = _numbers(block.get("mean", ()), "mean"), _numbers(block.get("std", ()), "std")
        order = str(block.get("channel_order", "RGB")).upper()
        if not (math.isfinite(scale) and scale != 0 and math.isfinite(float(block.get("offset", 0.0)))):
            raise ValueError("tfclassify.json: preprocessing scale must be a finite number other than 0, and offset "
                             "a finite number")
        for name, values in (("mean", mean), ("std", std)):
            if values and len(values) not in (1, channels):
                raise ValueError(f"tfclassify.json: preprocessing {name} has {len(values)} values; the model's "
                                 f"images have {channels} channels")
        if any(s <= 0 for s in std):
            raise ValueError("tfclassify.json: preprocessing std must be positive")
        if order not in CHANNEL_ORDERS or (order == "BGR" and channels != 3):
            raise ValueError(f"tfclassify.json: channel_order {order!r}: expected RGB or BGR (BGR for RGB models)")
        # crop_fraction as the float32 that metadata carries, so that clients cut the same pixels.
        return cls(scale, float(block.get("offset", 0.0)), mean, std, order, resize,
                   float(np.float32(crop_fraction)), interpolation)

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean or (0.0,), np.float32)
        std = np.asarray(self.std or (1.0,), np.float32)
        # ((x * scale + offset) - mean) / std == x * (scale / std) + (offset - mean) / std
        object.__setattr__(self, "_affine", (np.float32(self.scale) / std, (np.float32(self.offset) - mean) / std))

    @property
    def is_scaling_only(self) -> bool:
        """Whether this is a plain factor (what most models declare, or get by default)."""
        return not self.mean and not self.std and self.offset == 0 and self.channel_order == "RGB"

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels ``[N, H, W, C]`` (or any layout of one channel) as float32 model input."""
        if self.is_scaling_only:  # per request, on the event loop: one pass over the pixels, none for a scale of 1
            if self.scale == 1.0:
                return pixels.astype(np.float32)
            return np.multiply(pixels, np.float32(self.scale), dtype=np.float32)
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        assert self._affine is not None  # set by __post_init__
        multiplier, addend = self._affine
        out = pixels.astype(np.float32) * multiplier
        out += addend
        return out

    def as_dict(self) -> dict:
        """The declared values, for metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if not k.startswith("_")}

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def _numbers(values: object, name: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"tfclassify.json: preprocessing {name} must be a list of finite numbers, not {values!r}")
    return tuple(float(v) for v in values)
