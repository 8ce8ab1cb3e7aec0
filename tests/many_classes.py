"""Reports of many classes for the unit tests of their contents (tests/unit/test_report_many_classes.py) and the
browser's check of their pages (tests/system/test_report_many_classes_chromium.py): predictions with planted
mistakes, and the ``many`` fixture that writes the JSON, Markdown and HTML reports of 120 and 1,000 classes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tfclassify.client.quality.outputs import write_reports
from tfclassify.client.quality.report import build_report

LONG = "a class name long enough to be cut on the heatmap"
#: Planted mistakes (true, predicted, images), larger than any random one (those are 1 or 2 per pair).
PLANTED = [(5, 17, 30), (40, 41, 25), (99, 3, 20), (17, 5, 12)]


def labels_of(n: int) -> list[str]:
    return [LONG if i == 5 else f"class {i:04d}" for i in range(n)]


def predictions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class c has 40 + (7c mod 31) images (the last class none), 10% of them mistaken at random, plus PLANTED."""
    rng = np.random.default_rng(seed)
    support = 40 + (7 * np.arange(n)) % 31
    support[-1] = 0
    true = np.repeat(np.arange(n), support)
    predicted = true.copy()
    wrong = rng.random(len(true)) < 0.10
    predicted[wrong] = (true[wrong] + rng.integers(1, n, wrong.sum())) % n  # any other class
    planted = [(t, p, count) for t, p, count in PLANTED if max(t, p) < n - 1]
    for t, p, _count in planted:
        predicted[(true == t) & (predicted == p)] = t  # the planted counts are exact
    for t, p, count in planted:
        rows = np.flatnonzero((true == t) & (predicted == t))[:count]
        assert len(rows) == count
        predicted[rows] = p
    return true, predicted



@pytest.fixture(scope="module", params=[120, 1000])
def many(request, tmp_path_factory):
    n = request.param
    true, predicted = predictions(n)
    scores = np.random.default_rng(1).random(len(true))
    report = build_report(true, predicted, scores, labels_of(n))
    out = tmp_path_factory.mktemp(f"classes{n}")
    started = time.perf_counter()
    notes = write_reports(report, [out / "r.json", out / "r.md", out / "r.html"], None)
    seconds = time.perf_counter() - started
    return n, true, predicted, report, out, notes, seconds
