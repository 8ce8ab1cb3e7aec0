"""``promote`` replaces the model config file whole or not at all (tests/system/test_promote.py promotes against a
server)."""

from __future__ import annotations

import os

import pytest

from tfclassify.client.atomic import write_atomic

CONFIG = 'models {\n  name: "fashion"\n  version_policy { all {} }\n  version_labels { key: "stable" value: 1 }\n}\n'


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    """The config is replaced whole or not at all: a failure before the rename leaves the old file, no litter."""
    target = tmp_path / "models.pbtxt"
    target.write_text(CONFIG)
    os.chmod(target, 0o640)

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "models { name: \"half")
    assert target.read_text() == CONFIG and [p.name for p in tmp_path.iterdir()] == ["models.pbtxt"]
    monkeypatch.undo()
    write_atomic(target, CONFIG + "# new\n")
    assert target.read_text().endswith("# new\n") and (target.stat().st_mode & 0o777) == 0o640, "mode kept"
