"""The simulator's scorecard: what happened to every part, judged from the outside.

Each part's ground truth (defective or not, which image) is compared with what the
gate decided and with what an independent observer saw on the wire. A part is its id and
its trigger time (``truth`` and the observer key them so): when the PLC's counter comes
round, one id names several parts, each judged on its own. See docs/simulator.md.

Every accuracy figure carries its counts and exact bounds (``rate_block``: k of n and the
two-sided 95 % Clopper-Pearson interval), beside the bounds the model's threshold
reported on its validation set (``threshold_bounds``), so that a run of 200 parts is not
read as a promise: ``inspector bench`` writes them the same way (``accuracy``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

INSPECTED = {"pass", "defect", "uncertain"}


LEVEL = 0.95  # the confidence of every interval the lab writes
METHOD = "clopper-pearson"


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq, base = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    logs = [
        base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def _solve(f, target: float) -> float:
    """The p in [0, 1] where the decreasing ``f(p)`` crosses ``target``, by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return (lo + hi) / 2


def interval(k: int, n: int, confidence: float = LEVEL) -> tuple[float, float] | None:
    """The exact two-sided (Clopper-Pearson) interval of a rate seen as k events in n
    trials; the lab does not import ``training``, whose ``common.bounds`` gives the same
    (a test holds them equal). None without trials."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    a = (1.0 - confidence) / 2
    # lower: P(X >= k | p) = a; upper: P(X <= k | p) = a (both monotone in p)
    lo = 0.0 if k == 0 else _solve(lambda p: _binom_cdf(k - 1, n, p), 1.0 - a)
    hi = 1.0 if k == n else _solve(lambda p: _binom_cdf(k, n, p), a)
    return lo, hi


def rate_block(k: int, n: int, confidence: float = LEVEL) -> dict:
    """``{"k", "n", "rate", "interval"}``: a measured rate with its counts and exact bounds."""
    iv = interval(int(k), int(n), confidence)
    return {
        "k": int(k),
        "n": int(n),
        "rate": k / n if n else None,
        "interval": None if iv is None else [round(iv[0], 6), round(iv[1], 6)],
    }


def threshold_bounds(manifest: dict | None) -> dict | None:
    """What each defect class's threshold reported about itself on validation (the
    manifest's ``confidence``: escape and false-reject rates, k of n, upper bound and
    interval); None for a model without them."""
    out = {}
    for name, t in ((manifest or {}).get("thresholds") or {}).items():
        c = t.get("confidence") if isinstance(t, dict) else None
        if not c:
            continue
        out[name] = {
            "value": t.get("value"),
            "policy": t.get("policy"),
            "target": t.get("target"),
            "on": c.get("on"),
            "level": c.get("level"),
            **{
                k: {f: c[k].get(f) for f in ("k", "n", "rate", "upper", "interval")}
                for k in ("escape_rate", "false_reject_rate")
            },
        }
    return out or None


def sidecar_manifest(model: Path | str | None) -> dict | None:
    """The manifest beside an ONNX model (``MODEL.json``), when there is one."""
    if not model:
        return None
    path = Path(model).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def accuracy(defect, failed, manifest: dict | None, confidence: float = LEVEL) -> dict:
    """Escape and false-reject rates of parts whose truth (``defect``) and decision
    (``failed``) are known, each with k of n and its interval, and the threshold's own
    bounds from ``manifest`` beside them."""
    defect, failed = np.asarray(defect, bool), np.asarray(failed, bool)
    return {
        "parts": int(len(defect)),
        "level": confidence,
        "method": METHOD,
        "escape_rate": rate_block(int(np.sum(defect & ~failed)), int(defect.sum()), confidence),
        "false_reject_rate": rate_block(
            int(np.sum(~defect & failed)), int((~defect).sum()), confidence
        ),
        "accuracy": rate_block(int(np.sum(defect == failed)), len(defect), confidence),
        "threshold": threshold_bounds(manifest),
    }


def accuracy_line(a: dict) -> str:
    """One line: the rates with their counts and intervals, and the threshold's bounds."""

    def fig(b: dict) -> str:
        if not b["n"]:
            return "0 of 0 (n/a)"
        lo, hi = b["interval"]
        return f"{b['k']} of {b['n']} = {_rate(b['rate'])} ({_rate(lo)} to {_rate(hi)})"

    line = (
        f"escapes {fig(a['escape_rate'])}, false rejects {fig(a['false_reject_rate'])} "
        f"({100 * a['level']:.0f} % intervals)"
    )
    for name, t in (a.get("threshold") or {}).items():
        e, f = t["escape_rate"], t["false_reject_rate"]
        line += (
            f"; threshold {name} on {t['on']}: escapes {e['k']} of {e['n']} (upper "
            f"{_rate(e['upper'])}), false rejects {f['k']} of {f['n']} (upper {_rate(f['upper'])})"
        )
    return line


def _rate(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def scorecard(o, truth, observer, gate, t_fault, t_clear, rss_start, rss_end) -> dict:
    with gate.core.lock:  # the gate's decision for each part, by part id and trigger time
        decided = {(e["part_id"], e["t_trigger"]): e for e in gate.events}
    card = {
        "parts": len(truth),
        "passed": 0,
        "rejected": 0,
        "correct_passes": 0,
        "correct_rejects": 0,
        "escapes": 0,
        "false_rejects": 0,
        "unaccounted": 0,
        "missed": 0,
        "failsafe_rejects": {},
        "passed_without_timely_pass": 0,
        "image_mismatches": 0,
        "deadline_misses": 0,
    }
    latencies, recovery, mismatches, failsafe = [], None, [], []
    judged = {True: 0, False: 0}  # parts accounted for, defective and good
    for key, (defect, image) in truth.items():
        part_id, t_trig = key
        g = decided.get(key)
        v = observer.verdicts.get(key)
        arrival = t_trig + o.travel_ms / 1000.0
        if v is not None:
            latencies.append((v["_received"] - v["t_trigger"]) * 1000.0)
            if (
                v.get("frame")
                and v["frame"] != image
                and v["reason"] in ("ok", "defect", "uncertain")
            ):
                card["image_mismatches"] += 1
                if len(mismatches) < 10:
                    mismatches.append(
                        {
                            "part_id": part_id,
                            "expected": image,
                            "got": v["frame"],
                            "t_trigger": v["t_trigger"],
                            "t_capture": v["t_capture"],
                        }
                    )
        if v is None or v["_received"] > arrival:
            card["deadline_misses"] += 1
        if g is None:
            if not gate.core._was_blind(arrival):
                card["unaccounted"] += 1
                continue
            outcome, reason = "rejected", "gate_blind"  # the gate held its reject output on
        else:
            outcome, reason = g["outcome"], g["reason"]
        judged[bool(defect)] += 1
        if outcome == "missed":  # went by before the gate knew of it: physically, a pass
            card["missed"] += 1
            outcome = "passed"
        if outcome == "passed":
            card["passed"] += 1
            card["escapes" if defect else "correct_passes"] += 1
            timely = v is not None and v["result"] == "pass" and v["_received"] <= arrival
            card["passed_without_timely_pass"] += 0 if timely else 1
        else:
            card["rejected"] += 1
            if reason in ("defect", "uncertain"):
                card["correct_rejects" if defect else "false_rejects"] += 1
            else:
                card["failsafe_rejects"][reason] = card["failsafe_rejects"].get(reason, 0) + 1
                # what the station said, so that a fail-safe reject explains itself
                if len(failsafe) < 10:
                    failsafe.append(_failsafe_example(part_id, t_trig, reason, v))
                if defect:
                    card["correct_rejects"] += 1
        if (
            t_clear is not None
            and reason in INSPECTED
            and t_trig >= t_clear
            and v is not None
            and (recovery is None or v["_received"] - t_clear < recovery)
        ):
            recovery = v["_received"] - t_clear
    card["rates"] = _card_rates(card, judged, o)
    card["latency_ms"] = {
        "p50": _pct(latencies, 50),
        "p99": _pct(latencies, 99),
        "n": len(latencies),
    }
    card["image_mismatch_examples"] = mismatches
    card["failsafe_examples"] = failsafe
    card["late_verdicts"] = gate.core.counts["late_verdicts"]
    card["duplicate_verdicts_on_wire"] = observer.duplicates
    card["gate_counts"] = dict(gate.core.counts)
    card["fault"] = {
        "type": o.fault,
        "started": t_fault,
        "cleared": t_clear,
        "recovery_s": None if recovery is None else round(recovery, 3),
    }
    card["inspector_rss_kb"] = {
        "start": rss_start,
        "end": rss_end,
        "growth": None if not (rss_start and rss_end) else round(rss_end / rss_start - 1.0, 4),
    }
    card["config"] = {
        "rate_ppm": o.rate_ppm,
        "deadline_ms": o.deadline_ms,
        "travel_ms": o.travel_ms,
        "model": str(o.model),
        "data": str(o.data),
    }
    return card


def _failsafe_example(part_id: str, t_trigger: float, reason: str, verdict: dict | None) -> dict:
    """One fail-safe reject as the wire showed it: the gate's reason, and the station's own
    verdict for the part (its reason and detail, and when it arrived after the trigger) when
    one came at all."""
    example = {"part_id": part_id, "t_trigger": t_trigger, "gate_reason": reason}
    if verdict is not None:
        example["verdict_reason"] = verdict.get("reason")
        example["detail"] = verdict.get("detail")
        example["received_ms"] = round((verdict["_received"] - t_trigger) * 1000.0, 1)
    return example


def _card_rates(card: dict, judged: dict, o) -> dict:
    """The card's escapes and false rejects as rates of the defective and good parts the
    gate accounted for (``judged``), with k of n and the interval, beside the bounds the
    model's threshold reported. A defective part rejected fail-safe counts as caught."""
    out = accuracy([], [], sidecar_manifest(getattr(o, "model", None)))
    out["parts"] = judged[True] + judged[False]
    out["escape_rate"] = rate_block(card["escapes"], judged[True])
    out["false_reject_rate"] = rate_block(card["false_rejects"], judged[False])
    del out["accuracy"]
    return out


def format_scorecard(card: dict) -> str:
    lines = [
        f"parts {card['parts']}: passed {card['passed']}, rejected {card['rejected']}, "
        f"unaccounted {card['unaccounted']}, missed by the gate {card['missed']}",
        f"escapes (defect passed) {card['escapes']}, false rejects {card['false_rejects']}, "
        f"passed without a timely pass {card['passed_without_timely_pass']}",
        f"fail-safe rejects {card['failsafe_rejects'] or 'none'}",
        accuracy_line(card["rates"]),
        f"verdict latency p50 {card['latency_ms']['p50']} ms, p99 {card['latency_ms']['p99']} ms; "
        f"deadline misses {card['deadline_misses']}, late verdicts {card['late_verdicts']}",
    ]
    f = card["fault"]
    if f["type"] != "none":
        lines.append(f"fault {f['type']}: inspection resumed {f['recovery_s']} s after it cleared")
    rss = card["inspector_rss_kb"]
    if rss["start"]:
        lines.append(f"inspector RSS {rss['start']} kB -> {rss['end']} kB ({rss['growth']:+.1%})")
    return "\n".join(lines)
