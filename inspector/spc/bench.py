"""``inspector spc bench``: the figures of the SPC service, measured by simulation and by load.

- in-control average run length (ARL) to a false alarm of each run rule, of the default set,
  of EWMA and CUSUM, on a simulated 2 % reject rate in subgroups of 200 parts;
- detection delay of a sustained shift to 3 % (EWMA, CUSUM, rules);
- ingest rate into the embedded store and the process's memory over a long run;
- with ``--faults`` (``benchfaults.py``): the service end to end through a real broker while
  the database goes away twice and the broker restarts.

``python -m inspector.spc.bench [--faults] [--out FILE]``
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

import numpy as np

from . import charts

log = logging.getLogger(__name__)


def _rss_mb() -> float:
    """Resident memory now, in MiB (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rules_run_lengths(z: np.ndarray, rules, side: str = "upper") -> np.ndarray:
    """Run lengths between signals of ``rules`` on one long series, restarting the rules
    after each signal (a pattern counts only when it lies wholly after the last signal)."""
    flags = charts.run_rules(z, rules, side)
    spans = {r: charts.rule_span(r) for r in rules}
    candidates = sorted({int(i) for r in rules for i in np.nonzero(flags[r])[0]})
    out, last = [], -1
    for i in candidates:
        if any(flags[r][i] and i - spans[r] + 1 > last for r in rules):
            out.append(i - last)
            last = i
    return np.asarray(out, dtype=float)


def _rules_now(hist: np.ndarray, rules) -> np.ndarray:
    """Whether each replicate's latest subgroup completes an upper-side pattern of ``rules``
    (the Western Electric rules, vectorised across replicates; ``hist``: reps x last points)."""
    z = hist[:, -1]
    sig = np.zeros(len(z), dtype=bool)
    for r in rules:
        if r == "we1_beyond_3s":
            sig |= z > charts.SIGMA_LIMIT
        elif r in ("we2_2of3_beyond_2s", "we3_4of5_beyond_1s"):
            lim, need, width = (2.0, 2, 3) if r.startswith("we2") else (1.0, 4, 5)
            sig |= (z > lim) & ((hist[:, -width:] > lim).sum(axis=1) >= need)
        elif r == "we4_8_same_side":
            sig |= (hist.shape[1] >= 8) & (hist[:, -8:] > 0).all(axis=1)
        else:
            raise ValueError(f"{r}: not simulated across replicates")
    return sig


def first_signals(
    p_after: float,
    kinds,
    *,
    n: int = 200,
    p0: float = 0.02,
    reps: int = 2000,
    horizon: int = 40_000,
    shift_at: int = 0,
    seed: int = 0,
    rules=charts.DEFAULT_RULES,
) -> np.ndarray:
    """Subgroups to the first signal of any chart in ``kinds`` (``rules``, ``ewma``,
    ``cusum``) per replicate, all charts starting fresh, for a process at ``p0`` that moves
    to ``p_after`` after ``shift_at`` subgroups. Counted from the shift; NaN for a replicate
    that signalled before it (or never, within ``horizon``)."""
    rng = np.random.default_rng(seed)
    table = charts._z_table(n, p0)
    lam, L, k, h = charts.EWMA_LAMBDA, charts.EWMA_L, charts.CUSUM_K, charts.CUSUM_H
    e = np.zeros(reps)
    s = np.zeros(reps)
    hist = np.zeros((reps, 0))
    first = np.full(reps, np.nan)
    done = np.zeros(reps, dtype=bool)
    for t in range(horizon):
        z = table[rng.binomial(n, p_after if t >= shift_at else p0, reps)]
        sig = np.zeros(reps, dtype=bool)
        if "ewma" in kinds:
            e = lam * z + (1 - lam) * e
            sig |= e > L * np.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * (t + 1))))
        if "cusum" in kinds:
            s = np.maximum(0.0, s + z - k)
            sig |= s > h
        if "rules" in kinds:
            hist = np.concatenate([hist[:, -7:], z[:, None]], axis=1)
            sig |= _rules_now(hist, rules)
        new = sig & ~done
        first[new] = t + 1 - shift_at
        done |= sig
        if done.all():
            break
    first[first <= 0] = np.nan
    return first


def measure_arl(
    n: int = 200, p0: float = 0.02, subgroups: int = 2_000_000, seed: int = 1, reps: int = 4000
) -> dict:
    rng = np.random.default_rng(seed)
    z = charts.binomial_z(rng.binomial(n, p0, subgroups), np.full(subgroups, n), p0)
    per_rule = {}
    for rule in charts.RULES:
        rl = rules_run_lengths(z, (rule,))
        per_rule[rule] = round(float(rl.mean()), 1) if len(rl) else None
    default = rules_run_lengths(z, charts.DEFAULT_RULES)
    out = {
        "per_rule_upper_side": per_rule,
        "default_rules": list(charts.DEFAULT_RULES),
        "default_rules_arl": round(float(default.mean()), 1),
        "subgroups_simulated": subgroups,
    }
    for name, kinds in (
        ("ewma", ("ewma",)),
        ("cusum", ("cusum",)),
        ("all_charts", ("rules", "ewma", "cusum")),
    ):
        rl = first_signals(p0, kinds, n=n, p0=p0, reps=reps, seed=seed + len(name))
        out[f"{name}_arl"] = round(float(np.nanmean(rl)), 1)
    out["replicates"] = reps
    return out


def measure_ingest(verdicts: int, db: Path, batch: int = 500, sample_every: int = 50_000) -> dict:
    """Parse + store (SQLite, dedup) + live charts, as the service's writer does, fed JSON
    verdict payloads at full speed; RSS sampled along the way."""
    from ..contract.mqtt import MqttSection
    from .config import ChartsSection
    from .ingest import Ingest
    from .monitor import Monitor
    from .store import Store

    rng = np.random.default_rng(3)
    store = Store(db)
    monitor = Monitor(ChartsSection(), lambda t: None)
    ingest = Ingest(store, MqttSection(), ["inspector/+/verdict"], [], [], monitor.add)
    fails = rng.random(verdicts) < 0.02
    t0 = 1.7e9
    rss, t_start = [], time.perf_counter()
    done = 0
    while done < verdicts:
        items = []
        for seq in range(done, min(done + batch, verdicts)):
            f = bool(fails[seq])
            t = t0 + seq * 0.01
            payload = json.dumps(
                {
                    "schema": 1,
                    "station": f"st{seq % 4}",
                    "part_id": f"P{seq}",
                    "seq": seq,
                    "result": "fail" if f else "pass",
                    "reason": "defect" if f else "ok",
                    "class": "crack" if f else "good",
                    "scores": {"crack": 0.9 if f else 0.05, "good": 0.1 if f else 0.95},
                    "threshold": {"crack": 0.5},
                    "model_id": "m@1",
                    "t_trigger": t,
                    "t_capture": t,
                    "t_verdict": t + 0.02,
                    "deadline": t + 1,
                    "latency_ms": {"e2e": 20.0},
                    "detail": "",
                    "frame": "",
                }
            ).encode()
            items.append(("verdict", f"inspector/st{seq % 4}/verdict", payload, 0, 0, t))
        ingest.write(items)
        done += len(items)
        if done % sample_every < batch or done == verdicts:
            rss.append((done, round(_rss_mb(), 1)))
    elapsed = time.perf_counter() - t_start
    stored = store.count()
    store.close()
    return {
        "verdicts": verdicts,
        "stored": stored,
        "seconds": round(elapsed, 1),
        "verdicts_per_s": round(verdicts / elapsed),
        "path": "JSON parse + SQLite insert (dedup key, WAL, synchronous=NORMAL, "
        f"{batch} per transaction) + live charts of 4 stations; no broker",
        "rss_mb_samples": rss,
        "rss_mb_growth_after_first_10pct": round(rss[-1][1] - rss[max(len(rss) // 10, 0)][1], 1),
        "db_mb": round(db.stat().st_size / 2**20, 1),
    }


def run_all(verdicts: int = 1_000_000, quick: bool = False) -> dict:
    import platform
    import tempfile

    t = time.perf_counter()
    reps = 500 if quick else 4000
    arl = measure_arl(subgroups=200_000 if quick else 2_000_000, reps=reps)
    delays = {}
    for name, kinds in (
        ("ewma", ("ewma",)),
        ("cusum", ("cusum",)),
        ("rules", ("rules",)),
        ("all_charts", ("rules", "ewma", "cusum")),
    ):
        zero = first_signals(0.03, kinds, reps=reps, horizon=5000, seed=11)
        steady = first_signals(0.03, kinds, reps=reps, horizon=5000, shift_at=50, seed=12)
        delays[name] = {
            "from_start_mean": round(float(np.nanmean(zero)), 1),
            "after_50_in_control_mean": round(float(np.nanmean(steady)), 1),
            "after_50_median": float(np.nanmedian(steady)),
            "false_alarm_before_shift_share": round(float(np.mean(np.isnan(steady))), 3),
        }
    with tempfile.TemporaryDirectory() as tmp:
        ingest = measure_ingest(verdicts, Path(tmp) / "bench.sqlite")
    summary = {
        "default_rules": arl["default_rules"],
        "in_control_arl_default_rules": arl["default_rules_arl"],
        "in_control_arl_ewma": arl["ewma_arl"],
        "in_control_arl_cusum": arl["cusum_arl"],
        "in_control_arl_all_charts": arl["all_charts_arl"],
        "shift_2_to_3pct_delay_ewma": delays["ewma"]["after_50_in_control_mean"],
        "shift_2_to_3pct_delay_cusum": delays["cusum"]["after_50_in_control_mean"],
        "ingest_verdicts_per_s": ingest["verdicts_per_s"],
        "ingest_verdicts": verdicts,
        "rss_mb_growth": ingest["rss_mb_growth_after_first_10pct"],
    }
    return {
        "what": "inspector spc bench",
        "process": {
            "baseline_reject_rate": 0.02,
            "subgroup_parts": 200,
            "shift_to": 0.03,
            "shift_in_sigmas": round(0.01 / np.sqrt(0.02 * 0.98 / 200), 2),
        },
        "statistic": "z = normal quantile of the exact binomial mid-p CDF of the subgroup's "
        "reject count (3 sigma keeps its 0.135 % tail); rules on the upper side",
        "settings": {
            "rules": list(charts.DEFAULT_RULES),
            "side": "upper",
            "ewma": {"lambda": charts.EWMA_LAMBDA, "L": charts.EWMA_L},
            "cusum": {"k": charts.CUSUM_K, "h": charts.CUSUM_H},
        },
        "summary": summary,
        "in_control_arl": arl,
        "detection_delay_subgroups": delays,
        "ingest": ingest,
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - t, 1),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m inspector.spc.bench", description=__doc__)
    p.add_argument("--faults", action="store_true", help="the end-to-end run under faults")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    p.add_argument("--verdicts", type=int, default=None, help="stream length")
    p.add_argument("--quick", action="store_true", help="fewer simulations (without --faults)")
    p.add_argument("--rate", type=float, default=1000.0, help="--faults: verdicts per second")
    p.add_argument("--outage-s", type=float, default=30.0, help="--faults: each outage, s")
    p.add_argument(
        "--store",
        default="sqlite",
        help="--faults: sqlite, postgresql or both (sqlite,postgresql)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.faults:
        from .benchfaults import run_faults

        stores = tuple(s.strip() for s in args.store.split(","))
        if not set(stores) <= {"sqlite", "postgresql"}:
            p.error(f"--store {args.store}: give sqlite, postgresql or sqlite,postgresql")
        out = args.out or Path("docs/bench-spc-faults.json")
        result = run_faults(args.verdicts or 100_000, args.rate, args.outage_s, stores)
        summary = {
            s: {k: v for k, v in r.items() if k not in ("clean", "faults")}
            for s, r in result["runs"].items()
        }
    else:
        out = args.out
        result = run_all(verdicts=args.verdicts or 1_000_000, quick=args.quick)
        summary = result["summary"]
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if out:
        print(f"wrote {out}")
    if args.faults:
        ok = all(
            r["stored_equals_published"]
            and not r["duplicate_rows"]
            and not r["counted_twice_by_charts"]
            and not r["clean_alarms_missed_under_faults"]
            for r in result["runs"].values()
        )
        if not ok:
            print("FAILED: verdicts lost or counted twice, or an alarm missed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
