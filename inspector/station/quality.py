"""Image-quality watch: does the station still see what it saw at setup (and in training)?

Everything is measured on the model input (the frame after the station's geometry, resize
and colour conversion: ``preprocess``), the same thing the manifest's ``image_stats`` were
measured on at training time and ``inspector calibrate baseline`` measures when it is given
the station; so a drift outside the part's region (a conveyor's edge, a lamp in a corner)
is not a drift, and the figures are comparable.

Four measures per image (gray): focus (variance of the Laplacian), mean level, clipped
fractions (dark <= 2, bright >= 253) and illumination uniformity (darkest / brightest
mean of a 4x4 grid of blocks). ``inspector calibrate baseline`` stores their medians over
a reference set; the station measures every Nth frame and reports drift beyond its
limits (lens knocked out of focus, lamp ageing, camera moved) as status ``degraded``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..contract.preprocess import FrameError, PreprocessSpec, preprocess
from ..contract.schema import setting
from ..errors import ConfigError

log = logging.getLogger(__name__)
MEASURES = ("focus", "mean", "clipped_dark", "clipped_bright", "uniformity")
MODEL_INPUT = "model input (after preprocessing)"  # what ``measured_on`` says in the stats


def measure(image: np.ndarray) -> dict[str, float]:
    """The quality measures of one frame (gray, BGR or BGRA; uint8)."""
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        gray = image if image.shape[2] == 1 else cv2.cvtColor(image, code)
    else:
        gray = image
    gray = gray.reshape(gray.shape[0], gray.shape[1])
    focus = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    mean = float(gray.mean())
    n = gray.size
    dark = float(np.count_nonzero(gray <= 2)) / n
    bright = float(np.count_nonzero(gray >= 253)) / n
    blocks = cv2.resize(gray, (4, 4), interpolation=cv2.INTER_AREA).astype(np.float64)
    uniformity = float(blocks.min() / blocks.max()) if blocks.max() > 0 else 0.0
    return {
        "focus": focus,
        "mean": mean,
        "clipped_dark": dark,
        "clipped_bright": bright,
        "uniformity": uniformity,
    }


def baseline(images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Per measure: median and 5th/95th percentiles over a reference set."""
    rows = [measure(im) for im in images]
    out = {}
    for key in MEASURES:
        values = np.array([r[key] for r in rows])
        out[key] = {
            "p5": float(np.percentile(values, 5)),
            "p50": float(np.median(values)),
            "p95": float(np.percentile(values, 95)),
        }
    return out


@dataclass(frozen=True, kw_only=True)
class QualitySection:
    baseline: Path | None = setting(None, "baseline.yaml from 'inspector calibrate baseline'")
    every_n: int = setting(30, "measure every Nth frame")
    window: int = setting(5, "judge the median of the last N measurements (no flapping)")
    focus_ratio_min: float = setting(0.5, "focus below this fraction of the baseline: degraded")
    mean_shift_max: float = setting(
        40.0, "mean level further than this from the baseline: degraded"
    )
    clipped_max: float = setting(0.05, "more than this fraction of clipped pixels: degraded")
    uniformity_ratio_min: float = setting(0.7, "uniformity below this fraction of the baseline")

    def problems(self):
        if self.every_n < 1 or self.window < 1:
            yield "every_n", "every_n and window must be at least 1"


def load_baseline(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
        stats = data["stats"]
        for key in MEASURES:
            float(stats[key]["p50"])
    except FileNotFoundError:
        raise ConfigError(f"{path}: quality baseline not found") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise ConfigError(
            f"{path}: not a quality baseline (run 'inspector calibrate baseline')"
        ) from None
    return stats


class QualityWatch:
    """Measures every Nth frame; ``problems`` names what drifted, with the figures."""

    def __init__(
        self,
        cfg: QualitySection,
        stats: dict,
        training: dict | None = None,
        spec: PreprocessSpec | None = None,
    ) -> None:
        """``spec``: the station's preprocessing; frames are measured as the model sees them
        (without it, whole frames: only right for a station with no geometry)."""
        self.cfg = cfg
        self.stats = stats
        self.training = training or {}
        self.spec = spec
        self._input = np.zeros(spec.shape, np.uint8) if spec is not None else None
        if spec is not None and stats.get("measured_on") != MODEL_INPUT:
            log.warning(
                "the quality baseline was measured on whole frames, the station measures "
                "model inputs: make it again with 'inspector calibrate baseline' for this station"
            )
        self.recent: collections.deque[dict[str, float]] = collections.deque(maxlen=cfg.window)
        self.count = 0
        self.problems: list[str] = []
        self.current: dict[str, float] = {}

    def offer(self, image: np.ndarray) -> bool | None:
        """Count a frame; measure it when due.

        None when this frame was not measured (or could not be); otherwise whether the
        verdict on drift changed (``current`` then holds fresh figures).
        """
        self.count += 1
        if self.count % self.cfg.every_n:
            return None
        try:
            if self.spec is not None:
                image = preprocess(image, self.spec, out=self._input)
            self.recent.append(measure(image))
        except FrameError:
            return None  # the part fails as unreadable_frame; the pipeline reports it
        except cv2.error as exc:
            log.warning("quality measurement failed: %s", exc)
            return None
        self.current = {k: float(np.median([r[k] for r in self.recent])) for k in MEASURES}
        before = self.problems
        self.problems = self.judge(self.current)
        if self.problems != before:
            for p in self.problems:
                log.warning("image quality drift: %s", p)
            if not self.problems:
                log.info("image quality back within limits")
        return self.problems != before

    def judge(self, m: dict[str, float]) -> list[str]:
        c, b = self.cfg, self.stats
        out = []
        focus0 = b["focus"]["p50"]
        if focus0 > 0 and m["focus"] < c.focus_ratio_min * focus0:
            out.append(
                f"focus {m['focus']:.1f} < {c.focus_ratio_min:.0%} of baseline {focus0:.1f} (out of focus?)"
            )
        mean0 = b["mean"]["p50"]
        if abs(m["mean"] - mean0) > c.mean_shift_max:
            out.append(
                f"mean level {m['mean']:.0f} vs baseline {mean0:.0f} (lighting or exposure changed?)"
            )
        clipped = m["clipped_dark"] + m["clipped_bright"]
        if clipped > c.clipped_max:
            out.append(f"clipped pixels {clipped:.1%} > {c.clipped_max:.0%} (over/under-exposed)")
        uni0 = b["uniformity"]["p50"]
        if uni0 > 0 and m["uniformity"] < c.uniformity_ratio_min * uni0:
            out.append(
                f"uniformity {m['uniformity']:.2f} vs baseline {uni0:.2f} (lamp ageing or camera moved?)"
            )
        t = self.training.get("mean")
        if isinstance(t, dict) and "p5" in t and "p95" in t:
            lo, hi = float(t["p5"]) - c.mean_shift_max / 2, float(t["p95"]) + c.mean_shift_max / 2
            if not lo <= m["mean"] <= hi:
                out.append(
                    f"mean level {m['mean']:.0f} outside what the model was trained on "
                    f"({float(t['p5']):.0f}..{float(t['p95']):.0f})"
                )
        return out
