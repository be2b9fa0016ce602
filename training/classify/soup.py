"""A greedy weight soup (``train.soup: greedy``): the run's best epochs averaged into one model.

Each fine-tune epoch's weights are kept under ``epochs/`` while the run trains. When it ends,
the epochs are ranked by their validation loss; the best one starts the soup and each next
one joins only if the average's validation loss does not rise (Wortsman et al. 2022, "Model
soups"). With batch-norm statistics frozen (small sets) every epoch shares them, so the
average is a network of its own; it costs no training time, only one validation pass per
epoch tried. The soup replaces ``best.keras`` (the single best epoch stays as
``best-epoch.keras``), so export, evaluation and test-time flips all take it; ``run.json``
says which epochs joined and what each did to the validation loss. ``epochs/`` is removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EPOCHS = "epochs"  # the per-epoch weights, kept while the run trains


def epoch_file(out: Path) -> str:
    """The per-epoch checkpoint path pattern (Keras fills in the 1-based epoch)."""
    return str(Path(out) / EPOCHS / "{epoch:03d}.weights.h5")


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean categorical cross-entropy of the true classes, as Keras reports val_loss."""
    p = np.clip(probs[np.arange(len(y)), y].astype(np.float64), 1e-7, 1.0)
    return float(-np.log(p).mean())


def greedy(model, out: Path, x: np.ndarray, y: np.ndarray, losses: list[float]) -> dict | None:
    """Make the soup from ``out/epochs`` into ``model`` and ``out/best.keras``; returns what
    was done (None when fewer than two epochs were kept). ``losses[i]`` is epoch i+1's
    validation loss from the history; the soup is judged by the same loss on (x, y)."""
    out = Path(out)
    files = {int(p.name.split(".")[0]): p for p in (out / EPOCHS).glob("*.weights.h5")}
    ranked = sorted((e for e in files if 0 < e <= len(losses)), key=lambda e: (losses[e - 1], e))
    if len(ranked) < 2:
        shutil.rmtree(out / EPOCHS, ignore_errors=True)
        return None

    def weights_of(epoch: int) -> list[np.ndarray]:
        model.load_weights(str(files[epoch]))
        return [w.astype(np.float64) for w in model.get_weights()]

    def loss_of(weights: list[np.ndarray]) -> float:
        model.set_weights([w.astype(np.float32) for w in weights])
        return cross_entropy(model.predict(x, batch_size=64, verbose=0), y)

    total = weights_of(ranked[0])
    members = [ranked[0]]
    best_alone = current = loss_of(total)
    tried = [{"epoch": ranked[0], "val_loss": round(current, 5), "joined": True}]
    for epoch in ranked[1:]:
        trial = [t + w for t, w in zip(total, weights_of(epoch), strict=True)]
        loss = loss_of([t / (len(members) + 1) for t in trial])
        joined = loss <= current
        if joined:
            total, current = trial, loss
            members.append(epoch)
        tried.append({"epoch": epoch, "val_loss": round(loss, 5), "joined": bool(joined)})
    model.set_weights([(t / len(members)).astype(np.float32) for t in total])
    if len(members) > 1:
        os.replace(out / "best.keras", out / "best-epoch.keras")
        model.save(str(out / "soup.keras"))
        os.replace(out / "soup.keras", out / "best.keras")
    shutil.rmtree(out / EPOCHS, ignore_errors=True)
    log.info(
        "greedy soup of epochs %s: validation loss %.4f (the best epoch alone %.4f)",
        members,
        current,
        best_alone,
    )
    return {
        "method": "greedy",
        "epochs": members,
        "val_loss": round(current, 5),
        "best_epoch_val_loss": round(best_alone, 5),
        "tried": tried,
    }
