"""The report of 120 and 1,000 classes in a real browser (headless Chromium, a process of its own): nothing wider
than the window (tests/unit/test_report_many_classes.py checks the same reports' contents)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("width", [1280, 390])
def test_many_class_page_fits_the_window_in_chromium(many, width, tmp_path):
    """The page of 120 or 1,000 classes, at a desktop and a phone width: nothing wider than the window (a long
    class name once widened a phone's page from the heatmap's caption); a table wider than the window
    scrolls inside its own box."""
    from test_quality_report import CHROMIUM, measure

    if CHROMIUM is None:
        pytest.skip("chromium is installed by scripts/setup.sh (Debian package chromium)")
    seen = measure(many[4] / "r.html", width, tmp_path)
    assert seen["viewport"] == width and seen["page"] <= width, "the page scrolls sideways"
    html = (many[4] / "r.html").read_text()
    assert html.count("<table") == len(re.findall(r'<div class="scroll[^"]*"(?: id="[^"]+")?><table', html)) == 6
    if width > 1000:
        assert seen["tables_past_edge"] == []
