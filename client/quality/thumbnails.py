"""Reading scored images back for a report's thumbnails, from the inputs a run record names.

Each prediction row names its image by ``source`` (``"photos.zip/Shirt/0001.png"``,
``"fashion_mnist-test[41]"``); the run record's ``inputs`` say how each input
was opened. Files are decoded exactly as the scorer decoded them (same size,
channels, resize and inversion rule, from the record), so a thumbnail is what
the model saw; the files of a model that decodes them itself are shown in
colour at ``ENCODED_THUMBNAIL`` pixels. Only the wanted
images are decoded; a tar archive is read through once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfclassify.common.datasets import (
    DatasetNotFoundError,
    IdxFormatError,
    NpzFormatError,
    load_dataset,
    npz_arrays,
    read_array,
)
from tfclassify.common.image_files import ConversionSpec
from tfclassify.common.inputs.decoding import decode_files
from tfclassify.common.inputs.sources import FileRef, InputError, open_input

#: The thumbnail size (height, width) of files scored by a model that decodes them in its graph.
ENCODED_THUMBNAIL = (64, 64)


@dataclass
class Thumbnails:
    """Pixels by source, and why some could not be read back."""

    pixels: dict[str, np.ndarray] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_back(record: dict, sources: list[str], data_dir: Path | None = None) -> Thumbnails:
    """The pixels (uint8 ``[H, W]`` or ``[H, W, C]``) of ``sources`` from the inputs of the run ``record``.

    Never raises for an input that moved or changed: its images are left out
    and ``problems`` says why (the report is still written).
    """
    found = Thumbnails()
    wanted = set(sources)
    inputs = record.get("inputs") or []
    if not inputs:
        found.problems.append("the run record does not say where the images came from (written before "
                              "tfclassify recorded it): no thumbnails")
        return found
    spec = _conversion_spec(record)
    for described in inputs:
        name = described["name"]
        mine = {s for s in wanted if s.startswith((name + "/", name + "[")) or s == described["path"]}
        if not mine:
            continue
        try:
            if described["kind"] == "ArrayInput":
                found.pixels.update(_from_arrays(described, mine, data_dir))
            else:
                found.pixels.update(_from_files(described, mine, spec))
        except (OSError, InputError, DatasetNotFoundError, IdxFormatError, NpzFormatError, ValueError) as exc:
            found.problems.append(f"{name}: images not read back ({exc})")
    missing = wanted - found.pixels.keys()
    if missing and not found.problems:
        found.problems.append(f"{len(missing)} images not found in the inputs (they changed since the run)")
    return found


def _from_arrays(described: dict, sources: set[str], data_dir: Path | None) -> dict[str, np.ndarray]:
    if described.get("dataset"):
        directory = data_dir or described.get("data_dir")
        images = load_dataset(described["dataset"], described.get("split", "test"), directory,
                              download_missing=False).images
    else:
        path = Path(described["path"])
        if path.suffix == ".npz":
            images, _ = npz_arrays(path, described.get("npz_images"), None, described.get("split", "test"))
        else:
            images = read_array(path)
    prefix = len(described["name"]) + 1
    pixels = {}
    for source in sources:
        index = int(source[prefix:-1])
        if index < len(images):
            pixels[source] = np.asarray(images[index]).reshape(images.shape[1], images.shape[2])
    return pixels


def _conversion_spec(record: dict) -> ConversionSpec:
    """How the run decoded its files: the model's input in the record (28 x 28 grayscale in records from before)."""
    invert = record.get("identity", {}).get("invert", "auto")
    given = (record.get("model") or {}).get("input") or {}
    channels, resize = given.get("channels", 1), given.get("resize", "stretch")
    if channels == 0:
        return ConversionSpec(*ENCODED_THUMBNAIL, "no", channels=3, resize=resize)
    return ConversionSpec(given.get("height", 28), given.get("width", 28), invert if channels == 1 else "no",
                          channels=channels, resize=resize)


def _from_files(described: dict, sources: set[str], spec: ConversionSpec) -> dict[str, np.ndarray]:
    source_input = open_input(described["path"])  # a path, or an object URL
    refs: list[FileRef] = []
    names: list[str] = []
    remaining = set(sources)
    for item in source_input.items(with_data=True):
        if item.source in remaining:
            remaining.discard(item.source)
            assert isinstance(item.ref, FileRef)  # open_input's inputs are files (arrays are ArrayInput's)
            refs.append(item.ref)
            names.append(item.source)
            if not remaining:
                break
    pixels, failed = decode_files(refs, spec)
    bad = {position for position, _ in failed}
    good = [name for position, name in enumerate(names) if position not in bad]
    return dict(zip(good, pixels))
