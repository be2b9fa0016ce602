"""A run that learned nothing must not reach a line.

``problems`` looks at the validation split with the chosen threshold: an AUROC below
``MIN_AUROC`` (the scores barely rank defects above good parts) or a threshold that rejects
more than ``MAX_FALSE_REJECT_RATE`` of the good images means the model would either pass
defects or stop the line. ``train`` ends with a warning naming them; ``export`` refuses
(exit 2) unless ``--force``, and a forced export says so in the manifest (``quality_gate``).
"""

from __future__ import annotations

import numpy as np

from .metrics import auroc, binary_at

MIN_AUROC = 0.7
MAX_FALSE_REJECT_RATE = 0.5


def check(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """``{"passed", "problems", "auroc", "false_reject_rate", "limits"}`` on validation."""
    truth = np.asarray(truth, bool)
    area = auroc(truth, np.asarray(score, np.float64))
    at = binary_at(truth, np.asarray(score, np.float64), threshold)
    frr = float(at["false_reject_rate"] or 0.0)
    problems = []
    if area is None or area < MIN_AUROC:
        shown = "undefined" if area is None else f"{area:.3f}"
        problems.append(
            f"validation AUROC {shown} is below {MIN_AUROC} (the scores barely tell defects "
            "from good parts)"
        )
    if frr > MAX_FALSE_REJECT_RATE:
        problems.append(
            f"the chosen threshold rejects {frr:.0%} of the good validation images "
            f"(more than {MAX_FALSE_REJECT_RATE:.0%})"
        )
    return {
        "passed": not problems,
        "problems": problems,
        "auroc": area,
        "false_reject_rate": frr,
        "limits": {"min_auroc": MIN_AUROC, "max_false_reject_rate": MAX_FALSE_REJECT_RATE},
    }
