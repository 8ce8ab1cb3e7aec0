"""The accuracy report's numbers, checked against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfclassify.client.quality.report import build_report

LABELS = ["cat", "dog", "fox"]


def test_report_numbers_match_hand_computation(tmp_path):
    true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 1, 1, 0, 2, 1, 1])
    scores = np.array([0.9, 0.8, 0.95, 0.6, 0.7, 0.7, 0.55, 0.9, 0.85, 0.5])
    report = build_report(true, pred, scores, LABELS, top_pairs=2, max_misclassified=3)
    assert report.accuracy == pytest.approx(5 / 10)
    assert report.confusion_matrix == [[2, 1, 1], [1, 2, 0], [0, 2, 1]]
    cat, dog, fox = report.per_class
    assert (cat.precision, cat.recall, cat.support) == (pytest.approx(2 / 3), pytest.approx(2 / 4), 4)
    assert (dog.precision, dog.recall) == (pytest.approx(2 / 5), pytest.approx(2 / 3))
    assert fox.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert report.macro_f1 == pytest.approx(np.mean([m.f1 for m in report.per_class]))
    pairs = [(p.a, p.b, p.a_as_b, p.b_as_a) for p in report.most_confused]
    assert pairs == [("cat", "dog", 1, 1), ("dog", "fox", 0, 2)]
    assert [(m.index, m.true_label, m.predicted_label) for m in report.misclassified] == [
        (2, "cat", "dog"), (8, "fox", "dog"), (3, "cat", "fox"),
    ]
    path = tmp_path / "report.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert data["accuracy"] == 0.5 and data["most_confused"][0]["total"] == 2
    text = report.format_text()
    assert "accuracy 0.5000 on 10 images" in text and "cat <-> dog: 2" in text


def test_report_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equally long"):
        build_report(np.array([0, 1]), np.array([0]), np.array([1.0]), LABELS)


def test_automatic_scoring_batch_size():
    from tfclassify.client.scoring import auto_batch_size

    assert [auto_batch_size(n) for n in (100, 10000, 60000, 1_000_000)] == [256, 1024, 4096, 4096]
