"""The command line of the small from-scratch CNN the training tests train in seconds."""

from __future__ import annotations

from pathlib import Path


def small_cnn_argv(data: Path, run: Path, epochs: int, *settings: str) -> list[str]:
    """``inspector train`` of a half-width CNN at 32 px on ``data`` into ``run``, with
    ``--set`` for each of ``settings``."""
    argv = ["train", "--data", str(data), "--out", str(run), "--epochs", str(epochs)]
    argv += ["--model", "cnn", "--image-size", "32", "--set", "model.width=0.5"]
    for setting in settings:
        argv += ["--set", setting]
    return argv
