"""Remake the demo model that ``make demo`` runs: ``python -m training.demo_model``.

It is an ordinary product of this package: synthetic parts (``inspector.lab.modelkit``:
smooth surfaces, some with dark scratches or spots) -> ``train`` (the default compact
CNN, 64 px, half width) -> ``export`` (ONNX with manifest, parity-checked). The result
is committed as ``inspector/models/demo.onnx`` with ``demo.json`` beside it, so the demo
needs neither TensorFlow nor a training run. ``make demo-model`` calls this.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from inspector.lab.modelkit import write_parts

from . import registry
from .common.config import TrainConfig, override, validate

RECIPE = {
    "name": "demo-cnn",
    "model.type": "cnn",  # small and fast for the demo; real products: the default backbone
    "model.image_size": 128,  # a 4x4 feature grid: its top cell holds the defect
    "model.width": 0.5,
    "model.pooling": "avg",  # an exact class-activation map: the demo's heat maps
    "split.val": 0.2,
    "split.test": 0.2,
    "augment.rot90": True,
    "train.epochs": 20,
    "train.learning_rate": 0.002,
    "train.patience": 6,
    "threshold.policy": "max_escape_rate",
    "threshold.value": 0.0,
}
PARTS, DEFECT_RATE, SEED = 1000, 0.4, 11


def remake(out: Path, work: Path) -> dict:
    data = work / "parts"
    write_parts(data, PARTS, defect_rate=DEFECT_RATE, seed=SEED)
    cfg = TrainConfig(data=data)
    for key, value in RECIPE.items():
        cfg = override(cfg, key, value)
    validate(cfg)
    kind = registry.get("classify")
    run = kind.train(cfg, work / "run", verbose=2)
    manifest = kind.export(work / "run", out)
    return {"run": run, "manifest": manifest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "inspector/models/demo.onnx"
    )
    p.add_argument("--keep", type=Path, help="keep the parts and the run folder here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = args.keep or Path(tempfile.mkdtemp(prefix="demo-model-"))
    try:
        r = remake(args.out, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    t = r["manifest"]["thresholds"]["defect"]
    print(
        f"wrote {args.out}: threshold {t['value']:.4f}, validation accuracy "
        f"{t['metrics']['accuracy']:.4f}, parity max |diff| "
        f"{r['manifest']['parity']['max_abs_diff']:.1e}"
    )


if __name__ == "__main__":
    main()
