"""The preprocessing a version's tfclassify.json declares: read, checked and applied to uint8 pixels."""

from __future__ import annotations

import numpy as np
import pytest

from tfclassify.server.runtime.preprocessing import Preprocessing


def test_the_default_is_scaling_by_1_over_255_and_input_scale_still_counts():
    assert Preprocessing.declared({}, 3, 1 / 255) == Preprocessing()
    assert Preprocessing.declared({"input_scale": 1.0}, 3, 1 / 255).scale == 1.0
    pixels = np.full((1, 2, 2, 1), 255, np.uint8)
    np.testing.assert_allclose(Preprocessing().apply(pixels), np.ones((1, 2, 2, 1)), rtol=1e-6)


def test_mean_std_offset_and_channel_order_apply_per_channel():
    declared = Preprocessing.declared({"preprocessing": {"scale": 0.5, "offset": 1, "mean": [1, 2, 3],
                                                         "std": [2, 4, 8], "channel_order": "bgr"}}, 3, 1 / 255)
    pixels = np.array([[[[10, 20, 30]]]], np.uint8)  # R, G, B
    # BGR: 30, 20, 10; x * 0.5 + 1 = 16, 11, 6; minus the means 15, 9, 3; over the stds 7.5, 2.25, 0.375
    np.testing.assert_allclose(declared.apply(pixels), [[[[7.5, 2.25, 0.375]]]], rtol=1e-6)
    assert declared.as_dict() == {"scale": 0.5, "offset": 1.0, "mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 8.0],
                                  "channel_order": "BGR", "resize": "stretch", "crop_fraction": 1.0,
                                  "interpolation": ""}


def test_geometry_is_read_with_its_defaults():
    declared = Preprocessing.declared({"preprocessing": {"resize": "crop", "crop_fraction": 0.875,
                                                         "interpolation": "bicubic"}}, 3, 1 / 255)
    assert (declared.resize, declared.crop_fraction, declared.interpolation) == ("crop", 0.875, "bicubic")
    assert declared.is_scaling_only and declared.scale == 1 / 255


@pytest.mark.parametrize("block, channels, message", [
    ({"mean": [0.1, 0.2, 0.3]}, 1, "mean has 3 values; the model's images have 1 channels"),
    ({"std": [1, 0, 1]}, 3, "std must be positive"),
    ({"std": [1, -2, 1]}, 3, "std must be positive"),
    ({"mean": "0"}, 3, "mean must be a list of finite numbers, not '0'"),
    ({"mean": [float("nan")]}, 3, "mean must be a list of finite numbers"),
    ({"scale": 0}, 3, "scale must be a finite number other than 0"),
    ({"channel_order": "BGR"}, 1, "channel_order 'BGR': expected RGB or BGR (BGR for RGB models)"),
    ({"channel_order": "BGR"}, 4, "channel_order 'BGR'"),
    ({"channel_order": "GBR"}, 3, "channel_order 'GBR'"),
    ({"normalise": True}, 3, "unknown preprocessing keys ['normalise']"),
    ({"resize": "squash"}, 3, "preprocessing resize 'squash': expected stretch, crop, pad"),
    ({"interpolation": "cubic"}, 3, "preprocessing interpolation 'cubic': expected bilinear, nearest, bicubic, area, "
                                    "lanczos3"),
    ({"crop_fraction": 0}, 3, "preprocessing crop_fraction 0: expected a number above 0 and at most 1"),
    ({"crop_fraction": 1.5}, 3, "preprocessing crop_fraction 1.5"),
    ({"crop_fraction": True}, 3, "preprocessing crop_fraction True"),
])
def test_a_declaration_that_does_not_fit_the_model_says_why(block, channels, message):
    with pytest.raises(ValueError) as info:
        Preprocessing.declared({"preprocessing": block}, channels, 1 / 255)
    assert message in str(info.value)


def test_crop_fraction_is_the_float32_that_metadata_carries():
    """Clients read crop_fraction from a float32 field: the server cuts with the same number, or a 500-pixel image
    cropped to 0.8 would lose 50 rows on one side and 49 on the other."""
    declared = Preprocessing.declared({"preprocessing": {"crop_fraction": 0.8}}, 3, 1 / 255)
    assert declared.crop_fraction == float(np.float32(0.8)) != 0.8
