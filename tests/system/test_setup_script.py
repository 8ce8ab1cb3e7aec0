"""``make demo`` installs what the demo needs (the Fashion-MNIST package and the venv without the dev extra), ``make
test`` everything the tests need (Prometheus, rclone, Chromium, the dev extra), and a second run installs nothing.
``scripts/setup.sh`` runs for real, with ``apt-get``, ``dpkg-query``, ``sudo`` and the venv's python replaced by
stand-ins that record their arguments: fast, and nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

TEST_ONLY = ("prometheus", "rclone", "chromium")


def make_dry_run(target: str) -> str:
    return subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_make_demo_sets_up_for_the_demo_and_make_test_for_the_tests():
    demo = make_dry_run("demo")
    assert "scripts/setup.sh demo" in demo and "scripts/demo.sh" in demo
    assert not [word for word in (*TEST_ONLY, "setup.sh test") if word in demo], demo
    assert "scripts/setup.sh test" in make_dry_run("test")


@pytest.fixture
def stand_ins(tmp_path) -> tuple[Path, dict[str, str]]:
    """A bin folder of recording stand-ins first on PATH, and an existing venv whose python records pip calls."""
    calls = tmp_path / "calls.log"
    installed = tmp_path / "installed"  # Debian packages "installed" so far, one a line
    installed.touch()
    scripts = {
        "apt-get": f'echo "apt-get $*" >>{calls}; [ "$1" = install ] && printf "%s\\n" "${{@:5}}" >>{installed}; true',
        "dpkg-query": f'grep -qx "${{@: -1}}" {installed} && echo "install ok installed"',
        "sudo": '"$@"',
    }
    bin_dir = tmp_path / "bin"
    venv_bin = tmp_path / "venv" / "bin"
    for folder in (bin_dir, venv_bin):
        folder.mkdir(parents=True)
    scripts_in = {bin_dir / name: body for name, body in scripts.items()}
    scripts_in[venv_bin / "python"] = f'echo "python $*" >>{calls}'
    for path, body in scripts_in.items():
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VENV": str(tmp_path / "venv")}
    return calls, env


def setup(mode: str, calls: Path, env: dict[str, str]) -> list[str]:
    """The commands ``scripts/setup.sh MODE`` ran (apt-get and the venv's python), and forget them."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), mode], env=env, capture_output=True, text=True,
                   check=True, timeout=60)
    ran = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return ran


def test_each_mode_installs_what_its_command_needs_once(stand_ins):
    calls, env = stand_ins
    demo = setup("demo", calls, env)
    assert [c for c in demo if c.startswith("apt-get install")] == [
        "apt-get install -y -qq --no-install-recommends dataset-fashion-mnist"]
    assert demo[-1] == "python -m pip install -q -e .[server,trainer,report]"
    assert setup("demo", calls, env) == [], "a second run installs nothing"

    test = setup("test", calls, env)
    assert [c for c in test if c.startswith("apt-get install")] == [
        "apt-get install -y -qq --no-install-recommends prometheus rclone chromium"]
    assert test[-1] == "python -m pip install -q -e .[server,trainer,report,dev]"
    assert setup("test", calls, env) == [] and setup("demo", calls, env) == [], "the test set-up covers the demo's"


def test_a_fresh_machine_gets_everything_from_make_test(stand_ins):
    calls, env = stand_ins
    test = setup("test", calls, env)
    assert "apt-get install -y -qq --no-install-recommends dataset-fashion-mnist prometheus rclone chromium" in test
    assert test[-1].endswith(".[server,trainer,report,dev]")
