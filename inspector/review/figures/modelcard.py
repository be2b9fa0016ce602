"""A model's manifest as a person reads it: thresholds, validation and export parity as
rows of labelled values (the models page's tables), never raw dictionaries.

Nothing is computed here that training did not write: each value is the manifest's, only
formatted (rates as %, counts as k of n, bounds beside them).
"""

from __future__ import annotations


def pct(x) -> str:
    """0.0123 -> '1.23 %'; '' for a missing value."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return ""
    return f"{100 * x:.3g} %"


def num(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    return "" if x is None else str(x)


def rate(block) -> str:
    """A rate block ({k, n, rate, upper}) as '0 of 83 (0 %), at most 3.6 %'."""
    if not isinstance(block, dict) or not block.get("n"):
        return ""
    text = f"{block.get('k')} of {block.get('n')} ({pct(block.get('rate'))})"
    if block.get("upper") is not None:
        text += f", at most {pct(block['upper'])}"
    return text


def thresholds(manifest: dict) -> list[dict]:
    """One row per thresholded class: value, how it was chosen, escape and false-reject
    rates with their bounds (the confidence the manifest carries)."""
    out = []
    for cls, t in sorted((manifest.get("thresholds") or {}).items()):
        if not isinstance(t, dict):
            out.append({"class": cls, "value": num(t), "policy": "", "escape": "", "reject": ""})
            continue
        m = t.get("metrics") or {}
        conf = t.get("confidence") or {}
        escape = rate(conf.get("escape_rate")) or _from_counts(m, "fn", "tp", m.get("escape_rate"))
        reject = rate(conf.get("false_reject_rate")) or _from_counts(
            m, "fp", "tn", m.get("false_reject_rate")
        )
        target = t.get("target")
        policy = str(t.get("policy", ""))
        if target is not None:
            policy += f" ({pct(target)})" if "rate" in policy else f" ({num(target)})"
        out.append(
            {
                "class": cls,
                "value": num(t.get("value")),
                "policy": policy,
                "escape": escape,
                "reject": reject,
                "level": pct(conf.get("level")) if conf.get("level") else "",
                "warning": t.get("warning") or "",
            }
        )
    return out


def _from_counts(m: dict, k_key: str, other: str, r) -> str:
    if k_key in m and other in m:
        k, n = m[k_key], m[k_key] + m[other]
        return f"{k} of {n} ({pct(r if r is not None else (k / n if n else None))})"
    return pct(r)


VALIDATION = (
    ("accuracy", "accuracy", pct),
    ("balanced_accuracy", "balanced accuracy", pct),
    ("defect_recall", "defects caught", pct),
    ("precision", "precision", pct),
    ("f1", "F1", num),
    ("escape_rate", "escape rate", pct),
    ("false_reject_rate", "false-reject rate", pct),
    ("tp", "defects rejected (tp)", num),
    ("fn", "defects passed (fn)", num),
    ("tn", "good passed (tn)", num),
    ("fp", "good rejected (fp)", num),
)


def validation(manifest: dict) -> list[tuple[str, str]]:
    """(what, value) at the chosen threshold, on the set the manifest names."""
    m = manifest.get("validation") or manifest.get("metrics") or {}
    if not m:
        first = next(iter((manifest.get("thresholds") or {}).values()), None)
        m = first.get("metrics", {}) if isinstance(first, dict) else {}
    rows = [(label, fmt(m[key])) for key, label, fmt in VALIDATION if key in m]
    if m.get("on"):
        rows.insert(0, ("measured on", str(m["on"])))
    return rows


def parity(manifest: dict) -> list[tuple[str, str]]:
    """(what, value): how the ONNX export agrees with the framework's model."""
    p = manifest.get("parity") or {}
    if not isinstance(p, dict) or not p:
        return []
    rows = []
    if "images" in p:
        rows.append(("images compared", num(p["images"])))
    if "flips" in p:
        rows.append(("decisions that differ", num(p["flips"])))
    if "max_abs_diff" in p:
        rows.append(("largest score difference", f"{p['max_abs_diff']:.2g}"))
    if "tolerance" in p:
        rows.append(("tolerance", f"{p['tolerance']:.2g}"))
        if "max_abs_diff" in p:
            ok = p["max_abs_diff"] <= p["tolerance"] and not p.get("flips")
            rows.append(("verdict", "within tolerance" if ok else "OUT OF TOLERANCE"))
    if "accuracy" in p:
        rows.append(("accuracy (ONNX / framework)", f"{pct(p['accuracy'])} / "
                     f"{pct(p.get('accuracy_reference'))}"))  # fmt: skip
    if p.get("on"):
        rows.append(("measured on", str(p["on"])))
    return rows


def curve(manifest: dict) -> list[dict]:
    """Per thresholded class, the trade-off curve training kept (``thresholds.<class>.curve``):
    each point's escapes and false rejects as k of n with their upper bounds."""
    out = []
    for cls, t in sorted((manifest.get("thresholds") or {}).items()):
        c = t.get("curve") if isinstance(t, dict) else None
        if not isinstance(c, dict) or not c.get("points"):
            continue
        n_def, n_good = c.get("defective") or 0, c.get("good") or 0
        rows = []
        for p in c["points"]:
            rows.append(
                {
                    "threshold": num(p.get("threshold")),
                    "chosen": p.get("threshold") == c.get("chosen"),
                    "escape": rate(
                        {
                            "k": p.get("escapes"),
                            "n": n_def,
                            "rate": (p.get("escapes") or 0) / n_def if n_def else None,
                            "upper": p.get("escape_upper"),
                        }
                    ),  # fmt: skip
                    "reject": rate(
                        {
                            "k": p.get("false_rejects"),
                            "n": n_good,
                            "rate": (p.get("false_rejects") or 0) / n_good if n_good else None,
                            "upper": p.get("false_reject_upper"),
                        }
                    ),  # fmt: skip
                }
            )
        level = pct(c.get("level")) if c.get("level") else ""
        out.append({"class": cls, "on": c.get("on", ""), "level": level, "points": rows})
    return out
