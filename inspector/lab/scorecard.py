"""The simulator's scorecard: what happened to every part, judged from the outside.

Each part's ground truth (defective or not, which image) is compared with what the
gate decided and with what an independent observer saw on the wire. A part is its id and
its trigger time (``truth`` and the observer key them so): when the PLC's counter comes
round, one id names several parts, each judged on its own. See docs/simulator.md.
"""

from __future__ import annotations

import numpy as np

INSPECTED = {"pass", "defect", "uncertain"}


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
    latencies, recovery, mismatches = [], None, []
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
    card["latency_ms"] = {
        "p50": _pct(latencies, 50),
        "p99": _pct(latencies, 99),
        "n": len(latencies),
    }
    card["image_mismatch_examples"] = mismatches
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


def format_scorecard(card: dict) -> str:
    lines = [
        f"parts {card['parts']}: passed {card['passed']}, rejected {card['rejected']}, "
        f"unaccounted {card['unaccounted']}, missed by the gate {card['missed']}",
        f"escapes (defect passed) {card['escapes']}, false rejects {card['false_rejects']}, "
        f"passed without a timely pass {card['passed_without_timely_pass']}",
        f"fail-safe rejects {card['failsafe_rejects'] or 'none'}",
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
