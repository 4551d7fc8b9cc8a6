"""Confusion matrix counts and the PNG ``edgehal eval --confusion`` writes."""

import numpy as np

from edgehal.scoring.confusion import confusion_matrix, save_confusion_png


def test_counts_are_true_by_predicted():
    cm = confusion_matrix(np.array([0, 1, 1, 2, 2]), np.array([0, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 1]]
    assert cm.sum() == 5 and cm.dtype == np.int64


def test_png_is_written(tmp_path):
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
    path = tmp_path / "cm.png"
    save_confusion_png(cm, ["cat", "dog"], path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]   # written atomically: no temporary left
