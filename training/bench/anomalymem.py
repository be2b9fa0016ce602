"""``python -m training.bench.anomalymem --images 5000 --size 224``: the peak memory of an
anomaly fit on many good images, written to ``docs/bench-anomaly-memory.json``.

Writes ``--images`` good parts (the textured parts of ``bench.anomaly``, seeded) and 50
held-out good ones for the threshold into a temporary folder, then fits the anomaly kind
with its default settings in a fresh Python process, so that the peak resident set size
measured is the fit's own (TensorFlow, the backbone, one batch of images, the patch sample
and the coreset), not the generator's. Two figures: the fit's own report
(``run.json``: ``training.memory.peak_rss_bytes``) and the child's ``ru_maxrss`` as the
parent sees it (``RUSAGE_CHILDREN``); they should agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .anomaly import textured_part

VAL_IMAGES = 50


def write_good(root: Path, n: int, size: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", VAL_IMAGES)):
        folder = root / split / "good"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = np.clip(textured_part(rng, size), 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:05d}.png"), img)


def fit_child(data: Path, run: Path, size: int, statistics: str = "bank", config: str = "") -> None:
    """The fit, in this process: what the parent measures. ``config``: a training YAML whose
    model and ``anomaly:`` settings are fitted instead of the defaults (its data, split and
    threshold policy are not: the generated folders and the default policy are)."""
    import logging

    from .. import registry

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not config:
        values = {"model.image_size": size, "anomaly.statistics": statistics}
        cfg, settings = registry.configure("anomaly", data, values)
        registry.get("anomaly").train(cfg, run, settings)
        return
    import yaml

    raw = yaml.safe_load(Path(config).read_text()) or {}
    values = {f"model.{k}": v for k, v in (raw.get("model") or {}).items()}
    values.update({f"anomaly.{k}": v for k, v in (raw.get("anomaly") or {}).items()})
    values["model.image_size"] = size
    cfg, settings = registry.configure("anomaly", data, values)
    registry.get("anomaly").train(cfg, run, settings)


def measure(
    images: int, size: int, work: Path, statistics: str = "bank", config: Path | None = None
) -> dict:
    data, run = work / "data", work / "run"
    t0 = time.monotonic()
    write_good(data, images, size)
    write_seconds = time.monotonic() - t0
    code = (
        "import pathlib, sys; from training.bench.anomalymem import fit_child; "
        f"fit_child(pathlib.Path({str(data)!r}), pathlib.Path({str(run)!r}), {size}, "
        f"{statistics!r}, {str(config or '')!r})"
    )
    t1 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    fit_wall = time.monotonic() - t1
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the anomaly fit failed:\n{tail}")
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    info = json.loads((run / "run.json").read_text())
    tr, a = info["training"], info["anomaly"]
    mem = tr["memory"]
    settings = (
        f"the settings of {config}" if config else f"default settings, statistics: {statistics}"
    )
    return {
        "what": f"anomaly fit ({settings}, efficientnet-lite0, {size} px grey) on {images} "
        f"generated good images (+{VAL_IMAGES} for the threshold), in a fresh process",
        "command": f"python -m training.bench.anomalymem --images {images} --size {size}"
        + ("" if statistics == "bank" or config else f" --statistics {statistics}")
        + (f" --config {config}" if config else ""),
        "statistics": tr["config"]["anomaly"]["statistics"],
        "config": str(config) if config else None,
        "anomaly_settings": tr["config"]["anomaly"],
        "images": images,
        "image_size": size,
        "peak_rss_bytes": mem["peak_rss_bytes"],
        "peak_rss_mb": round(mem["peak_rss_bytes"] / 2**20, 1),
        "peak_rss_seen_by_parent_mb": round(child_peak / 2**20, 1),
        "limit_mb": 2048,
        "under_limit": mem["peak_rss_bytes"] < 2 * 2**30,
        "rss_at_fit_start_mb": round(mem["rss_at_start_bytes"] / 2**20, 1),
        "patch_sample_mb": round(mem["patch_sample_bytes"] / 2**20, 1),
        "all_patch_features_mb": round(a["training_patches"] * a["feature_dims"] * 4 / 2**20, 1),
        "training_patches": a["training_patches"],
        "coreset_candidates": a.get("coreset_candidates"),
        "bank_size": a["bank_size"],
        "bank_mb": round(a["bank_bytes"] / 2**20, 2),
        "good_images": tr["good_images"],
        "seconds": {
            "write_images": round(write_seconds, 1),
            "fit_process": round(fit_wall, 1),
            "features": tr["feature_seconds"],
            "coreset": tr["coreset_seconds"],
        },
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "note": "a shared 2-core machine, other jobs running: timings are upper bounds",
        },
        "versions": tr["versions"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bench.anomalymem")
    ap.add_argument("--images", type=int, default=5000, help="good training images")
    ap.add_argument("--size", type=int, default=224, help="image and model input size (px)")
    ap.add_argument("--out", type=Path, default=Path("docs/bench-anomaly-memory.json"))
    ap.add_argument("--work", type=Path, help="keep the images and the run here")
    ap.add_argument(
        "--statistics",
        choices=("bank", "position"),
        default="bank",
        help="the model of normal (anomaly.statistics): the bank, or region Gaussians",
    )
    ap.add_argument(
        "--config",
        type=Path,
        help="fit a training YAML's model and anomaly settings (e.g. "
        "training/configs/elpv-anomaly.yaml) instead of the defaults",
    )
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="anomalymem-"))
    try:
        shutil.rmtree(work / "run", ignore_errors=True)
        r = measure(args.images, args.size, work, args.statistics, args.config)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    print(
        f"anomaly fit of {r['images']} good {r['image_size']}-px images: peak RSS "
        f"{r['peak_rss_mb']:,.0f} MB (all patch features would be "
        f"{r['all_patch_features_mb']:,.0f} MB; sample kept {r['patch_sample_mb']:,.0f} MB); "
        f"fit {r['seconds']['fit_process']:.0f} s; wrote {args.out}"
    )
    return 0 if r["under_limit"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
