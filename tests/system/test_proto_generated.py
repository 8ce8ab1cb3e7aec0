"""The committed generated code matches what proto/generate.py produces now."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_generated_code_is_current(tmp_path):
    # In a child process: protoc's C++ runtime and TensorFlow's (imported by other tests) must not share one.
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc produced nothing"
    stale = [str(p) for p in generated if (ROOT / "proto" / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"regenerate with `make proto` (or python proto/generate.py): {stale}"
