"""Thresholds carry their confidence (DESIGN 14): exact bounds, a policy that holds the
escape rate's upper bound, the uncertain band, and the station's use of it."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from inspector.contract.manifest import embed, validate
from inspector.contract.records import Reason
from inspector.errors import ConfigError
from inspector.lab.modelkit import build_contrast_model
from inspector.station.config import load_config
from inspector.station.unit import load_unit
from training.bench import thresholds as bench
from training.common import bounds, thresholds, thresholdtext
from training.common.config import ThresholdConfig
from training.common.metrics import binary_at

from .conftest import station_yaml

BAND = SimpleNamespace(escape_rate=0.01, max_review_rate=0.05)


# -- the bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [  # two-sided 95 % Clopper-Pearson intervals as published in binomial tables
        (1, 10, 0.0025, 0.4450),
        (3, 100, 0.0062, 0.0852),
        (0, 20, 0.0, 0.1684),
        (20, 20, 0.8316, 1.0),
        (5, 50, 0.0333, 0.2181),
    ],
)
def test_intervals_match_the_tables(k, n, lo, hi):
    got = bounds.interval(k, n, 0.95)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_the_own_beta_quantile_agrees_with_scipy_and_the_closed_form():
    stats = pytest.importorskip("scipy.stats")
    for a, b in [(1, 1), (1, 149), (2, 299), (5, 496), (41, 2660), (300, 12)]:
        for q in (0.025, 0.05, 0.95, 0.975):
            assert bounds._beta_ppf_exact(q, a, b) == pytest.approx(
                stats.beta.ppf(q, a, b), rel=1e-9, abs=1e-12
            )
    for n in (1, 7, 150, 5000):  # no escape among n: the bound is 1 - (1 - c)^(1/n)
        assert bounds._beta_ppf_exact(0.95, 1, n) == pytest.approx(1 - 0.05 ** (1 / n))


def test_a_set_needs_149_defective_images_to_promise_2_percent():
    assert bounds.trials_needed(0.02, 0.95) == 149
    assert bounds.upper(0, 149) <= 0.02 < bounds.upper(0, 148)
    assert bounds.trials_needed(0.0) is None  # no finite set promises zero escapes
    assert bounds.largest_k(148, 0.02) is None
    k = bounds.largest_k(500, 0.02)
    assert bounds.upper(k, 500) <= 0.02 < bounds.upper(k + 1, 500)


# -- the policy -----------------------------------------------------------------------------


def _scores(rng, n_good, n_def):
    truth = np.r_[np.zeros(n_good, bool), np.ones(n_def, bool)]
    return truth, np.r_[rng.beta(2, 8, n_good), rng.beta(8, 2, n_def)]


def test_a_small_validation_set_falls_back_and_says_how_many_more_images_it_needs():
    truth, score = _scores(np.random.default_rng(0), 200, 60)
    t = thresholds.choose(truth, score, "max_escape_rate", 0.02, band=BAND)
    p = t["promise"]
    assert not p["held"] and p["defective_needed"] == 149 and p["more_defective_needed"] == 89
    assert "cannot promise" in t["warning"] and "149 (89 more)" in t["warning"]
    # the fallback: the most lenient threshold that lets no validation defect pass
    assert t["confidence"]["escape_rate"]["k"] == 0
    assert t["value"] < score[truth].min()
    assert not (score[~truth] >= t["value"]).all()
    assert t["confidence"]["escape_rate"]["upper"] == pytest.approx(1 - 0.05 ** (1 / 60))
    lines = "\n".join(thresholdtext.summary_lines(t))
    assert "WARNING" in lines and "<- chosen" in lines and "uncertain band" in lines


def test_an_escape_rate_of_zero_can_never_be_promised():
    truth, score = _scores(np.random.default_rng(1), 200, 400)
    t = thresholds.choose(truth, score, "max_escape_rate", 0.0)
    assert not t["promise"]["held"] and "no finite validation set" in t["warning"]
    assert t["confidence"]["escape_rate"]["k"] == 0


def _beta_cdf(x: float, a: int, b: int) -> float:
    """Beta(a, b) distribution function for whole a, b (the binomial identity)."""
    return 1.0 - bounds._binom_cdf(a - 1, a + b - 1, x)


def test_the_reported_upper_bound_holds_the_true_escape_rate_in_95_percent_of_sets():
    """Scores of a known distribution: the true escape rate at the chosen threshold is
    exact, so the bound's coverage over many validation sets is measured, not assumed.
    A policy on the point estimate instead would cover about half the time."""
    rng = np.random.default_rng(7)
    held, promised = [], []
    for _ in range(300):
        truth, score = _scores(rng, 300, 300)
        t = thresholds.choose(truth, score, "max_escape_rate", 0.03)
        e = t["confidence"]["escape_rate"]
        true_escape = _beta_cdf(t["value"], 8, 2)
        held.append(true_escape <= e["upper"])
        promised.append(true_escape <= 0.03)
    assert np.mean(held) >= 0.92 and np.mean(promised) >= 0.95


def test_max_f1_and_false_reject_policies_report_their_bounds_too():
    truth, score = _scores(np.random.default_rng(2), 300, 100)
    f1 = thresholds.choose(truth, score, "max_f1")
    assert f1["promise"] is None and f1["warning"] is None
    at = binary_at(truth, score, f1["value"])
    assert f1["confidence"]["escape_rate"]["k"] == at["fn"]
    assert f1["confidence"]["false_reject_rate"]["n"] == 300
    fr = thresholds.choose(truth, score, "max_false_reject_rate", 0.01)
    f = fr["confidence"]["false_reject_rate"]
    # 300 good images promise 1 % only with none rejected (the bound is then 0.99 %)
    assert fr["promise"]["of"] == "false_reject_rate" and f["k"] == 0
    assert f["upper"] <= 0.01 and fr["promise"]["held"] and fr["warning"] is None
    # and it is the lowest such threshold: one step lower rejects a good part
    lower = np.max(score[score < fr["value"]])
    assert binary_at(truth, score, lower)["false_reject_rate"] > 0


def test_a_false_reject_target_too_small_for_the_good_images_falls_back_and_says_so():
    truth, score = _scores(np.random.default_rng(4), 120, 60)
    fr = thresholds.choose(truth, score, "max_false_reject_rate", 0.01)
    f = fr["confidence"]["false_reject_rate"]
    assert f["k"] == 0 and not fr["promise"]["held"]  # none rejected, still no promise
    assert fr["promise"]["more_good_needed"] == 299 - 120
    assert "120 good validation images cannot promise" in fr["warning"]
    assert "rejects no good validation image" in fr["warning"]


def test_the_curve_is_compact_and_spans_the_trade_off():
    truth, score = _scores(np.random.default_rng(3), 2000, 500)
    t = thresholds.choose(truth, score, "max_escape_rate", 0.02)
    pts = t["curve"]["points"]
    assert 10 <= len(pts) <= 22 and len(json.dumps(t["curve"])) < 4000
    ts = [p["threshold"] for p in pts]
    assert ts == sorted(ts) and t["curve"]["chosen"] == pytest.approx(t["value"], abs=1e-6)
    escapes = [p["escapes"] for p in pts]
    rejects = [p["false_rejects"] for p in pts]
    assert escapes == sorted(escapes) and rejects == sorted(rejects, reverse=True)
    assert escapes[0] == 0 and escapes[-1] == 500 and rejects[0] == 2000 and rejects[-1] == 0


# -- the uncertain band ---------------------------------------------------------------------


def test_the_band_spends_at_most_the_review_budget_and_catches_escapes():
    truth, score = _scores(np.random.default_rng(4), 1000, 400)
    t = thresholds.choose(truth, score, "max_escape_rate", 0.02, band=BAND)
    b = t["uncertain_band"]
    in_band = (score >= b["lower"]) & (score < t["value"])
    assert b["margin"] == pytest.approx(t["value"] - b["lower"])
    assert b["review_rate"]["k"] == int(np.sum(in_band & ~truth)) <= 0.05 * 1000
    assert b["escape_rate"]["k"] == int(np.sum(truth & (score < b["lower"])))
    assert b["escape_rate"]["k"] <= t["confidence"]["escape_rate"]["k"]
    # measured on new parts of the same kind: fewer escapes, a bounded review share
    new_truth, new_score = _scores(np.random.default_rng(5), 20000, 8000)
    eff = thresholds.band_effect(new_truth, new_score, t["value"], b["margin"])
    assert eff["escape_rate"]["rate"] < eff["escape_rate_without"]["rate"]
    assert eff["review_rate"]["rate"] <= 0.08
    none = thresholds.choose(truth, score, "max_escape_rate", 0.02, band=None)
    assert none["uncertain_band"] is None


def test_the_band_stops_where_the_stricter_rate_is_held():
    truth, score = _scores(np.random.default_rng(6), 3000, 3000)
    wide = SimpleNamespace(escape_rate=0.015, max_review_rate=0.5)
    b = thresholds.choose(truth, score, "max_escape_rate", 0.02, band=wide)["uncertain_band"]
    assert b["goal"]["held"] and b["escape_rate"]["upper"] <= 0.015
    assert b["review_rate"]["rate"] < 0.5  # the narrowest band that holds it, not the budget


# -- the manifest and the station -----------------------------------------------------------


def _model_with_band(tmp_path):
    path = build_contrast_model(tmp_path / "m.onnx", size=32)
    manifest = json.loads(path.with_suffix(".json").read_text())
    truth, score = _scores(np.random.default_rng(8), 400, 200)
    chosen = thresholds.choose(truth, score, "max_escape_rate", 0.02, band=BAND)
    manifest["thresholds"]["defect"] = chosen
    embed(path, manifest)
    return path, chosen


def test_manifests_validate_the_new_fields_and_old_ones_stay_valid(tmp_path):
    path, chosen = _model_with_band(tmp_path)
    m = json.loads(path.with_suffix(".json").read_text())
    assert validate(m) == []
    old = json.loads(path.with_suffix(".json").read_text())
    old["thresholds"]["defect"] = {"value": 0.5, "policy": "max_f1", "metrics": {}}
    assert validate(old) == []
    bad = json.loads(json.dumps(m))
    bad["thresholds"]["defect"]["confidence"]["escape_rate"]["k"] = 10**6
    bad["thresholds"]["defect"]["uncertain_band"]["margin"] = 2.0
    problems = "\n".join(validate(bad))
    assert "thresholds.defect.confidence" in problems
    assert "thresholds.defect.uncertain_band.margin" in problems


class _Broker:
    host, port = "127.0.0.1", 1883


def test_the_station_takes_the_band_from_the_model_with_auto(tmp_path, parts_dir):
    path, chosen = _model_with_band(tmp_path)
    t, lower = chosen["value"], chosen["uncertain_band"]["lower"]
    inside = (t + lower) / 2
    for margin, reason in (("auto", Reason.UNCERTAIN), ("0.0", Reason.OK)):
        extra = f'decision: {{uncertainty_margin: {margin}}}\nrecorder: {{path: "{tmp_path}/r"}}\n'
        cfg_file = tmp_path / "station.yaml"
        cfg_file.write_text(station_yaml(path, parts_dir, _Broker, extra=extra))
        unit = load_unit(load_config(cfg_file))
        d = unit.decider.decide(np.array([1 - inside, inside]))
        assert d.reason == reason, margin
        below = unit.decider.decide(np.array([1 - lower / 2, lower / 2]))
        assert below.result == "pass"
    cfg_file.write_text(
        station_yaml(path, parts_dir, _Broker, extra="decision: {uncertainty_margin: wide}\n")
    )
    with pytest.raises(ConfigError, match="decision.uncertainty_margin: a number in"):
        load_config(cfg_file)


# -- the generated-set acceptance, small --------------------------------------------------


def test_generated_parts_keep_the_promise_quickly():
    """The bench (docs/bench-thresholds.json, 20 seeds) in a few seconds: three seeds, a
    validation set big enough for the promise and one too small for it."""
    scenarios = (
        bench.Scenario("enough", val_parts=3000, test_parts=4000),
        bench.Scenario("too few", val_parts=500, test_parts=4000),
    )
    r = bench.bench(3, scenarios, coverage_seeds=0, reference_parts=0)
    enough, few = r["scenarios"]
    assert all(s["promise_held"] for s in enough["seeds"])
    assert enough["summary"]["measured_escape_rate_pooled"] <= 0.02
    # max_f1, the old default, lets many more defects through on the same parts
    assert enough["summary"]["max_f1"]["escape_rate_mean"] > 0.02
    for s in few["seeds"]:
        n = s["validation"]["defective"]
        assert not s["promise_held"] and s["more_defective_needed"] == 149 - n
        assert f"({149 - n} more)" in s["warning"]
    for sc in (enough, few):
        assert sc["summary"]["escape_within_upper_bound"] >= 2 / 3
        b = sc["summary"]["band"]
        assert b["escape_rate_with_mean"] < b["escape_rate_without_mean"]
        assert b["review_rate_good_mean"] <= 0.1
    assert math.isclose(
        enough["summary"]["escape_within_upper_bound"],
        np.mean([s["escape_within_upper_bound"] for s in enough["seeds"]]),
    )
    # beside the bound on the true rate, the bound made for the measured one, and the
    # chance that each seed's measured rate stays within the first
    for s in enough["seeds"]:
        e = s["reported"]
        assert e["escape_predicted_upper"] == bounds.predicted_upper(
            e["escapes"], s["validation"]["defective"], s["test"]["defective"]
        )
        assert e["escape_predicted_upper"] >= e["escape_upper"] - 1e-3
        assert 0.5 < s["chance_within_upper_bound"] <= 1
    assert 0 <= enough["summary"]["chance_line_holds"] <= 1
    assert "escape_within_prediction_bound_in_95pct_of_seeds" in enough["acceptance"]


def test_a_line_can_state_its_bounds_at_99_percent():
    """docs/bench-thresholds-99.json: on the same seed, threshold.confidence 0.99 holds 2 %
    with a stricter threshold (fewer validation escapes allowed), and the command that made
    the figures says so."""
    sc = (bench.Scenario("enough", val_parts=3000, test_parts=2000),)
    at95 = bench.bench(1, sc, coverage_seeds=0, reference_parts=0)["scenarios"][0]["seeds"][0]
    r = bench.bench(
        1, sc, policy=ThresholdConfig(confidence=0.99), coverage_seeds=0, reference_parts=0
    )
    at99 = r["scenarios"][0]["seeds"][0]
    assert "--confidence 0.99" in r["command"] and r["policy"]["confidence"] == 0.99
    assert at99["promise_held"] and at99["reported"]["escape_upper"] <= 0.02
    assert at99["threshold"] < at95["threshold"]  # fail at >= threshold: stricter
    assert at99["reported"]["escapes"] < at95["reported"]["escapes"]
    assert at99["measured"]["escape_rate"] <= at95["measured"]["escape_rate"]


# -- valid after the selection -------------------------------------------------------------


def test_the_prediction_bound_is_the_beta_binomial_quantile():
    stats = pytest.importorskip("scipy.stats")
    for k, n, m in ((0, 200, 2000), (4, 500, 2000), (3, 100, 50), (0, 60, 1)):
        want = stats.betabinom.ppf(0.95, m, k + 1, n - k) / m
        assert bounds.predicted_upper(k, n, m) == pytest.approx(want)
    # many new parts: the measured rate's bound tends to the bound on the true rate
    assert bounds.predicted_upper(4, 500, 200_000) == pytest.approx(bounds.upper(4, 500), rel=0.02)
    assert bounds.predicted_upper(0, 0, 10) is None and bounds.predicted_upper(5, 5, 10) == 1.0


def test_the_most_lenient_passing_threshold_keeps_its_bound_after_the_selection():
    """Uniform defect scores (the true escape rate at t is t): over many validation sets
    the chosen threshold lies below the (k+1)-th lowest defect score, its true rate is
    within the reported bound in ~95 % of them, and the rate measured on new parts within
    the prediction bound as often."""
    rng = np.random.default_rng(5)
    n, m, sets = 300, 1000, 400
    true_in, measured_in = [], []
    for _ in range(sets):
        defect = rng.random(n)
        score = np.r_[defect, 1 + rng.random(50)]  # good parts score above every defect
        truth = np.r_[np.ones(n, bool), np.zeros(50, bool)]
        c = thresholds.choose(truth, score, "max_escape_rate", 0.02)
        k = bounds.largest_k(n, 0.02)
        e = c["confidence"]["escape_rate"]
        assert e["k"] == k and c["value"] < np.sort(defect)[k]  # below the (k+1)-th
        true_in.append(c["value"] <= e["upper"])
        measured = np.mean(rng.random(m) < c["value"])
        measured_in.append(measured <= bounds.predicted_upper(e["k"], n, m))
    # exact 95 %: 400 sets put the share within about +-2.2 % of it (two standard errors)
    assert 0.925 <= np.mean(true_in) <= 0.99
    assert np.mean(measured_in) >= 0.925


def test_the_training_default_bounds_escapes():
    t = ThresholdConfig()
    assert (t.policy, t.value, t.confidence) == ("max_escape_rate", 0.02, 0.95)
    assert 0 < t.band.max_review_rate < 1
