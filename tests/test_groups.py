"""Figures per value of a manifest column: which kind of part a model loses."""

from __future__ import annotations

import numpy as np
import pytest

from training import TrainingError
from training.common import groups


def _scores():
    """Good parts around 0.2; sure defects far above them, unsure ones among them."""
    rng = np.random.default_rng(3)
    good = rng.normal(0.2, 0.1, 200)
    sure = rng.normal(0.9, 0.1, 80)
    unsure = rng.normal(0.3, 0.1, 20)
    truth = np.r_[np.zeros(200, bool), np.ones(100, bool)]
    score = np.r_[good, sure, unsure]
    meta = (
        [{"probability": "0", "serial": f"g{i}"} for i in range(200)]
        + [{"probability": "1", "serial": f"s{i}"} for i in range(80)]
        + [{"probability": "0.67", "serial": f"u{i}"} for i in range(20)]
    )
    return truth, score, meta


def test_the_defects_the_annotators_doubted_show_where_the_model_loses():
    truth, score, meta = _scores()
    by = groups.by_columns(truth, score, meta, threshold=0.5)
    assert list(by) == ["probability"]  # a serial per part is no grouping
    p = by["probability"]
    assert [p[v]["defective"] for v in ("0", "0.67", "1")] == [0, 20, 80]
    assert p["0"]["good"] == 200 and p["0"]["auroc"] is None  # one class only
    assert p["1"]["auroc_vs_all_good"] > 0.99
    assert p["0.67"]["auroc_vs_all_good"] < 0.85
    # at 0.5 nearly every unsure defect passes, nearly no sure one does
    unsure, sure = p["0.67"]["escape_rate"], p["1"]["escape_rate"]
    assert unsure["n"] == 20 and unsure["k"] >= 17 and sure["k"] <= 2
    assert unsure["upper"] >= unsure["rate"] >= unsure["interval"][0]
    assert sum(p[v]["false_reject_rate"]["n"] for v in p) == 200
    assert p["0"]["auroc_vs_all_defective"] == pytest.approx(
        groups.by_group(truth, score, ["x"] * 300)["x"]["auroc"]
    )


def test_folds_average_their_aurocs_group_by_group():
    truth, score, meta = _scores()
    a = groups.by_columns(truth, score, meta, columns=["probability"])
    b = groups.by_columns(truth, score[::-1].copy(), meta, columns=["probability"])
    m = groups.mean_over([a, b])["probability"]
    want = (
        a["probability"]["1"]["auroc_vs_all_good"] + b["probability"]["1"]["auroc_vs_all_good"]
    ) / 2
    assert m["1"]["auroc_vs_all_good"] == pytest.approx(want, abs=1e-4)
    assert m["1"]["runs"] == 2 and m["0"]["auroc"] is None


def test_metadata_that_does_not_match_the_images_is_refused():
    truth, score, meta = _scores()
    with pytest.raises(ValueError, match="300 images but 299 metadata rows"):
        groups.by_columns(truth, score, meta[:-1])
    with pytest.raises(TrainingError, match=r"data.csv: not every image has .*'probability'.*"
                       r"columns: \['serial'\]"):  # fmt: skip
        odd = [{"serial": "x"} for _ in meta]
        groups.by_columns(truth, score, odd, columns=["probability"], data="data.csv")
    # asked for by name, a column with a value per part is split all the same
    assert len(groups.by_columns(truth, score, meta, columns=["serial"])["serial"]) == 300
    assert groups.by_columns(truth, score, [{} for _ in meta]) == {}
