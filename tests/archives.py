"""Image archives built from the real Fashion-MNIST and MNIST test images, for the scoring tests."""

from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


#: Broken files put beside the images: name -> bytes, and the reason each must be skipped with.
def broken_files(valid_png: bytes) -> dict[str, tuple[bytes, str]]:
    return {
        "Shirt/empty.png": (b"", "empty file"),
        "Shirt/truncated.png": (valid_png[: len(valid_png) // 2], "corrupt or truncated image"),
        "Shirt/notes.txt": (b"these are not pixels\n", "not an image"),
        "Shirt/bomb.png": (bomb_png(50_000, 50_000), "decompression bomb"),
    }


def encode(pixels: np.ndarray, fmt: str = "PNG", **params) -> bytes:
    """One uint8 image [H, W] as an image file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A small, valid PNG header declaring width x height 8-bit grayscale pixels (with a token of data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def class_folder(label: str) -> str:
    """The folder name of a class ("T-shirt/top" cannot be one: "T-shirt_top")."""
    return label.replace("/", "_")


def image_members(images: np.ndarray, labels: np.ndarray, names: list[str], fmt: str = "png",
                  by_index: bool = False) -> list[tuple[str, bytes]]:
    """(member path, file bytes) per image, in class folders named by class name (or index)."""
    pil_format = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF", "webp": "WEBP"}[fmt]
    members = []
    for i, (pixels, label) in enumerate(zip(images, labels)):
        folder = str(int(label)) if by_index else class_folder(names[int(label)])
        members.append((f"{folder}/{i:05d}.{fmt}", encode(pixels, pil_format)))
    return members


def write_zip(path: Path, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_tree(root: Path, members: list[tuple[str, bytes]]) -> Path:
    for name, data in members:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV (``.csv``) or JSONL manifest of (path, label)."""
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps({"path": p, "label": label}) + "\n" for p, label in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_member(rows: list[dict]) -> dict[str, tuple]:
    """What each image of scored rows got (class, score, true class, skip reason), by its path inside the input
    (the input's own name left out): rows of the same files from different inputs compare equal."""
    return {r["source"].split("/", 1)[1]: (r.get("class"), r.get("score"), r.get("true_class"),
                                          (r.get("skipped") or "").split(":")[0]) for r in rows}
