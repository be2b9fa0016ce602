"""The good-only anomaly threshold holds the *upper* bound of its false-reject rate, says
how many more good images a small validation set needs, and carries its bounds."""

from __future__ import annotations

import numpy as np
import pytest

from training.anomaly.bank import GOOD_ONLY_FALLBACK, choose_threshold
from training.anomaly.config import AnomalyConfig
from training.common import bounds
from training.common.config import TrainConfig


def _good(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(4.0, 1.0, n) + 1.0


def _rejected(good: np.ndarray, t: dict) -> int:
    return int(np.sum(good >= t["raw"]))


def test_the_threshold_holds_the_upper_bound_not_the_point_estimate():
    good = _good(1000)
    t = choose_threshold(good, np.zeros(0), TrainConfig(), AnomalyConfig(false_reject_rate=0.01))
    k = bounds.largest_k(1000, 0.01, 0.95)
    assert 0 < k < 10  # the point estimate would have let 10 of 1,000 be rejected
    assert _rejected(good, t) == k
    f = t["confidence"]["false_reject_rate"]
    assert (f["k"], f["n"]) == (k, 1000) and f["upper"] <= 0.01
    assert f["upper"] == pytest.approx(bounds.upper(k, 1000, 0.95))
    assert t["promise"]["held"] and t["warning"] is None and t["fallback"] is None
    assert t["policy"] == "max_false_reject_rate" and t["target"] == 0.01
    # the lowest such threshold: one step lower rejects one good image more
    assert np.sum(good >= np.sort(good)[-(k + 1)]) == k + 1


def test_too_few_good_images_fall_back_to_rejecting_none_and_say_how_many_more(caplog):
    good = _good(30)
    with caplog.at_level("WARNING", logger="training.anomaly.bank"):
        t = choose_threshold(good, np.zeros(0), TrainConfig(), AnomalyConfig())
    assert _rejected(good, t) == 0 and t["raw"] > good.max()
    p = t["promise"]
    assert not p["held"] and p["good_needed"] == 299 and p["more_good_needed"] == 269
    assert t["fallback"] == GOOD_ONLY_FALLBACK
    w = t["warning"]
    assert "30 good validation images cannot promise a false-reject rate of 1.0 % at 95 %" in w
    assert "that needs 299 (269 more)" in w and GOOD_ONLY_FALLBACK in w
    assert "WARNING" not in w and w in caplog.text  # logged as it is stored
    f = t["confidence"]["false_reject_rate"]
    assert (f["k"], f["n"]) == (0, 30) and f["upper"] == pytest.approx(bounds.upper(0, 30))


def test_ties_at_the_edge_pass_together():
    good = np.r_[np.linspace(1, 2, 400), [3.0, 3.0, 3.0]]
    t = choose_threshold(good, np.zeros(0), TrainConfig(), AnomalyConfig(false_reject_rate=0.01))
    assert _rejected(good, t) == 0  # rejecting the three tied images would break the bound
    assert t["confidence"]["false_reject_rate"]["k"] == 0


def test_labelled_defects_keep_the_classifier_policy():
    good, defect = _good(300), _good(200, seed=1) + 20
    t = choose_threshold(good, defect, TrainConfig(), AnomalyConfig())
    assert t["policy"] == "max_escape_rate" and t["confidence"]["escape_rate"]["n"] == 200
