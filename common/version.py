"""The installed tfclassify version."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The version of the installed ``tfclassify`` distribution, or ``"unknown"``."""
    try:
        return metadata.version("tfclassify")
    except metadata.PackageNotFoundError:
        return "unknown"
