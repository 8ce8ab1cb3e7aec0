"""What a model expects of uint8 pixels when it does not do it in its graph, as declared in ``tfclassify.json``.

::

    {"preprocessing": {"scale": 0.00392156862745098, "offset": 0.0,
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "channel_order": "RGB"}}

A float-input model gets ``((pixels in channel_order) * scale + offset - mean) / std``, per channel; every key
is optional (``scale``: the older ``input_scale`` key, else 1/255; ``offset`` 0; ``mean`` 0; ``std`` 1; ``RGB``).
Integer-input models get the pixels as they are. Every API's metadata returns it, so a client can prepare
float inputs itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """Declared preprocessing of uint8 pixels for a float-input model (see the module's docstring)."""

    scale: float = 1.0 / 255
    offset: float = 0.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    channel_order: str = "RGB"
    #: The arrays ``apply`` uses, computed once: (multiplier, addend) per channel, or scalars.
    _affine: tuple[np.ndarray, np.ndarray] = field(default=None, repr=False, compare=False)

    @classmethod
    def declared(cls, metadata: dict, channels: int, default_scale: float) -> "Preprocessing":
        """The preprocessing a version's ``tfclassify.json`` declares (``ValueError`` when it makes no sense for
        a model of ``channels`` channels)."""
        block = metadata.get("preprocessing") or {}
        if not isinstance(block, dict):
            raise ValueError("tfclassify.json: preprocessing must be an object")
        unknown = set(block) - {"scale", "offset", "mean", "std", "channel_order"}
        if unknown:
            raise ValueError(f"tfclassify.json: unknown preprocessing keys {sorted(unknown)} "
                             "(known: scale, offset, mean, std, channel_order)")
        scale = float(block.get("scale", metadata.get("input_scale", default_scale)))
        mean = tuple(float(v) for v in block.get("mean", ()))
        std = tuple(float(v) for v in block.get("std", ()))
        order = str(block.get("channel_order", "RGB")).upper()
        for name, values in (("mean", mean), ("std", std)):
            if values and len(values) not in (1, channels):
                raise ValueError(f"tfclassify.json: preprocessing {name} has {len(values)} values; the model's "
                                 f"images have {channels} channels")
        if any(s == 0 for s in std):
            raise ValueError("tfclassify.json: preprocessing std must not be 0")
        if order not in CHANNEL_ORDERS or (order == "BGR" and channels < 3):
            raise ValueError(f"tfclassify.json: channel_order {order!r}: expected RGB or BGR (BGR for colour models)")
        return cls(scale, float(block.get("offset", 0.0)), mean, std, order)

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean or (0.0,), np.float32)
        std = np.asarray(self.std or (1.0,), np.float32)
        # ((x * scale + offset) - mean) / std == x * (scale / std) + (offset - mean) / std
        object.__setattr__(self, "_affine", (np.float32(self.scale) / std, (np.float32(self.offset) - mean) / std))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels ``[N, H, W, C]`` (or any layout of one channel) as float32 model input."""
        if self.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        multiplier, addend = self._affine
        out = pixels.astype(np.float32) * multiplier
        if addend.any():
            out += addend
        return out

    def as_dict(self) -> dict:
        """The declared values, for metadata."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if not k.startswith("_")}

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)
