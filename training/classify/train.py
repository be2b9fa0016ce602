"""``inspector train``: dataset + config -> a run folder with checkpoints and a threshold.

The run folder ``runs/<name>/`` holds:

- ``config.yaml`` (the resolved config), ``split.json`` (files and counts per split),
  ``data_report.json`` (unreadable files, duplicates across splits, warnings);
- ``best.keras`` (lowest validation loss; with ``train.soup: greedy`` the average of the
  epochs that lower it most, the single best epoch kept as ``best-epoch.keras``: see
  ``soup``) and ``last.keras``; ``backup/`` while a run is
  in progress (``--resume`` continues from it after a crash or Ctrl-C);
- ``history.csv`` (one row per epoch), ``tensorboard/``;
- ``run.json``: classes, the threshold chosen on validation by the configured policy with
  the validation metrics at that point, image statistics of the training images, timings
  and library versions, and under ``preprocess`` the frame setup (the station's geometry
  and bit depth, from the recordings' sidecars or ``--geometry``: see ``frames``) every
  image went through. ``inspector export`` reads it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from .. import TrainingError
from ..common import guard, thresholds
from ..common.config import TrainConfig, as_dict
from ..common.metrics import defect_score, is_defect
from ..common.runs import setup_of, spec_of, versions, write_json
from ..data import datasets, runsplit
from . import recipe, soup
from .inputs import targets, train_dataset
from .losses import loss_for

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, out: Path, resume: bool = False, verbose: int | None = None) -> dict:
    """Train, choose the threshold on validation and write the run folder; returns run.json."""
    from ..common.tf import keras, tf

    if cfg.data is None:
        raise TrainingError("no dataset: give --data DIR (or 'data:' in the config)")
    out = Path(out)
    if (out / "run.json").exists() and not resume:
        raise TrainingError(f"{out}: holds a finished run; choose another --out")
    if resume and not (out / "backup").exists():
        raise TrainingError(f"{out}: nothing to resume (no backup/ from an interrupted run)")
    if not resume and (out / "backup").exists():
        raise TrainingError(
            f"{out}: holds an interrupted run; add --resume to continue it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    started = time.monotonic()

    setup = setup_of(cfg)
    spec = spec_of(cfg, setup)
    data = datasets.prepare(
        cfg.data,
        spec,
        cfg.defect_classes,
        cfg.split.val,
        cfg.split.test,
        cfg.split.seed,
        cfg.near_duplicate_bits,
    )
    tr, va = data.splits["train"], data.splits["val"]
    missing = [c for i, c in enumerate(data.classes) if not np.any(tr.y == i)]
    if missing:
        raise TrainingError(f"the training split has no images of {missing}")
    val_truth = is_defect(va.y, data.classes, data.defect_classes)
    if not val_truth.any() or val_truth.all():
        kind = "defective" if not val_truth.any() else "good"
        raise TrainingError(
            f"the validation split has no {kind} images ({len(va.y)} images): the threshold "
            "cannot be chosen; add images or change split.val"
        )
    (out / "config.yaml").write_text(yaml.safe_dump(as_dict(cfg), sort_keys=False))
    write_json(out / "split.json", runsplit.split_file(data, Path(cfg.data)))
    write_json(out / "data_report.json", data.report)

    gpus = tf.config.list_physical_devices("GPU")
    mixed = cfg.train.mixed_precision == "on" or (cfg.train.mixed_precision == "auto" and gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    strategy = _strategy(cfg.train.strategy)
    n_classes = len(data.classes)
    with strategy.scope():
        from .models import build

        model = build(cfg.model, n_classes)
    steps = max(1, int(np.ceil(len(tr.y) / cfg.train.batch_size)))

    loss = loss_for(cfg.train.auc_weight, data.classes, data.defect_classes)

    def compile_for(rate: float, epochs: int) -> None:
        with strategy.scope():
            schedule = keras.optimizers.schedules.CosineDecay(
                rate, decay_steps=steps * epochs, alpha=0.02
            )
            model.compile(
                optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.train.weight_decay),
                loss=loss,
                metrics=["accuracy"],
            )

    log.info("%s: %d parameters", model.name, model.count_params())
    onehot = targets(tr, cfg, data.classes, data.defect_classes)
    train_ds = train_dataset(tr.x, tr.y, onehot, cfg, n_classes, tf, keras)
    val_ds = tf.data.Dataset.from_tensor_slices(
        (va.x, np.eye(n_classes, dtype=np.float32)[va.y])
    ).batch(cfg.train.batch_size)
    class_weight = None
    if cfg.train.balance == "class_weights":
        counts = np.bincount(tr.y, minlength=n_classes)
        class_weight = {i: len(tr.y) / (n_classes * max(c, 1)) for i, c in enumerate(counts)}
    best_so_far = None
    if resume:  # keep the best checkpoint of the earlier epochs, unless a kill cut it short
        if _intact(out / "best.keras"):
            best_so_far = min(_val_losses(out), default=None)
        else:
            (out / "best.keras").unlink(missing_ok=True)
    callbacks = [
        # the epoch's row first: a kill between the two repeats an epoch, never loses one
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=resume),
        # double_checkpoint: a kill while the backup is written falls back to the one before
        keras.callbacks.BackupAndRestore(str(out / "backup"), double_checkpoint=True),
        keras.callbacks.ModelCheckpoint(
            str(out / "best.keras"),
            monitor="val_loss",
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.ModelCheckpoint(str(out / "last.keras")),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.train.patience),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False),
    ]
    if cfg.train.soup == "greedy":  # every epoch's weights, for the soup made at the end
        callbacks.append(
            keras.callbacks.ModelCheckpoint(soup.epoch_file(out), save_weights_only=True)
        )
    if cfg.train.max_minutes:
        callbacks.append(_time_limit(cfg.train.max_minutes * 60, keras))
    if verbose is None:
        verbose = 1 if sys.stderr.isatty() else 2
    steps_per_epoch = steps if cfg.train.balance == "sampling" else None

    def fit(epochs: int, callbacks=None):
        return model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            class_weight=class_weight,
            callbacks=callbacks,
            verbose=verbose,
        )

    fine_tuning, head_seconds = None, 0.0
    if recipe.pretrained(cfg):
        if cfg.train.head_epochs and not resume:  # a resumed run restores phase 2's state
            recipe.freeze_backbone(model)
            compile_for(cfg.train.learning_rate, cfg.train.head_epochs)
            log.info("head: %d epochs with the backbone frozen", cfg.train.head_epochs)
            t_head = time.monotonic()
            fit(cfg.train.head_epochs)
            head_seconds = time.monotonic() - t_head
        fine_tuning = recipe.unfreeze(model, cfg, len(tr.y))
        fine_tuning.update(head_epochs=cfg.train.head_epochs, head_seconds=round(head_seconds, 1))
        log.info("fine-tune: %s", fine_tuning)
        compile_for(cfg.train.learning_rate * cfg.train.fine_tune_lr_scale, cfg.train.epochs)
    else:
        compile_for(cfg.train.learning_rate, cfg.train.epochs)
    fit_started = time.monotonic()
    history = fit(cfg.train.epochs, callbacks)
    fit_seconds = time.monotonic() - fit_started
    from .models import load_best

    best = load_best(out, cfg.model, n_classes)  # float32, exactly what export converts
    losses = _val_losses(out) or history.history.get("val_loss", [])
    made = soup.greedy(best, out, va.x, va.y, losses) if cfg.train.soup == "greedy" else None
    probs = best.predict(va.x, batch_size=64, verbose=0).astype(np.float64)
    score = defect_score(probs, data.classes, data.defect_classes)
    chosen = thresholds.choose_by(cfg.threshold, val_truth, score)
    gate = guard.check(val_truth, score, chosen["value"])
    if not gate["passed"]:
        log.warning(
            "this run learned too little to reach a line: %s; export will refuse it "
            "(--force overrides and says so in the manifest)",
            "; ".join(gate["problems"]),
        )
    run = {
        "name": cfg.name or out.name,
        "classes": data.classes,
        "defect_classes": data.defect_classes,
        "preprocess": {
            "size": list(spec.size),
            "color": spec.color,
            "interpolation": spec.interpolation,
            **setup.to_dict(),
        },
        "threshold": chosen,
        "quality_gate": gate,
        "image_stats": datasets.image_stats(tr.x),
        "dataset": {
            "source": str(cfg.data),
            "fingerprint": data.report["fingerprint"],
            "counts": data.counts(),
            "unreadable": len(data.report["unreadable"]),
            "cross_split_duplicates": len(data.report["duplicates"]),
        },
        "training": {
            "model": cfg.model.type,
            "parameters": int(model.count_params()),
            "epochs_run": len(losses),
            "best_epoch": int(np.argmin(losses)) + 1 if losses else None,
            "best_val_loss": float(np.min(losses)) if losses else None,
            "fit_seconds": round(fit_seconds, 1),
            "fine_tuning": fine_tuning,
            "soup": made,
            "total_seconds": round(time.monotonic() - started, 1),
            "mixed_precision": bool(mixed),
            "strategy": cfg.train.strategy,
            "devices": [d.name for d in gpus] or ["CPU"],
            "config": as_dict(cfg),
            "versions": versions(),
        },
    }
    write_json(out / "run.json", run)
    return run


def _time_limit(seconds: float, keras):
    """Stop after the first epoch that ends past ``seconds`` of training."""
    t0 = time.monotonic()

    def on_epoch_end(epoch, logs=None):
        if time.monotonic() - t0 > seconds:
            log.warning("time limit reached after epoch %d: stopping", epoch + 1)
            callback.model.stop_training = True

    callback = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    return callback


def _strategy(name: str):
    from ..common.tf import tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _intact(path: Path) -> bool:
    """A .keras file (a zip) that was written to the end."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _val_losses(out: Path) -> list[float]:
    """Validation loss per epoch from history.csv (all epochs, across resumes). An epoch
    that a kill cut short and the resumed run repeated appears twice there: the later row
    counts, once."""
    import csv

    try:
        with open(out / "history.csv", newline="") as f:
            by_epoch = {
                int(r["epoch"]): float(r["val_loss"])
                for r in csv.DictReader(f)
                if r.get("val_loss")
            }
    except (OSError, ValueError, KeyError):
        return []
    return [by_epoch[e] for e in sorted(by_epoch)]
