"""Several runs exported as one model (``inspector export RUN --with RUN2 [--with RUN3]``).

Networks trained alike from different seeds disagree on the hard parts, and the mean of their
probabilities ranks parts better than any one of them. The runs become one graph: the image
goes through every member and the graph returns the mean of their class probabilities (and
of their class maps, when every member has one), so the station needs nothing new. The
threshold is chosen again, with the first run's policy, on the mean's validation scores.

The members must be interchangeable: the same classes and defect classes, the same input
(size, colour, the station's preprocessing) and the same split, file for file. A member
whose training images include another's validation images would make the threshold (and
every validation figure) rest on images the ensemble learned; such runs are refused, and
so is a run given twice.

Cost: the network runs once per member, so batch-1 latency grows about as many times.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import TrainingError
from ..common.runs import load_run
from ..data import runsplit

_SAME = ("classes", "defect_classes", "preprocess")


def _split_files(run: Path) -> dict[str, list[str]]:
    """The run's split, file paths relative to its dataset's folder (two runs may read copies
    of one dataset in different places)."""
    base, files = runsplit.files_of_run(run)
    return {name: sorted(os.path.relpath(p, base) for p in paths) for name, paths in files.items()}


def check_members(run: Path, others: list[Path]) -> list[tuple]:
    """(cfg, info) of ``run`` and every other run; TrainingError naming what differs."""
    run = Path(run)
    cfg, info = load_run(run)
    seen = {run.resolve()}
    members = [(run, cfg, info)]
    splits = _split_files(run)
    for other in map(Path, others):
        if other.resolve() in seen:
            raise TrainingError(f"--with {other}: the same run twice")
        seen.add(other.resolve())
        if not (other / "run.json").is_file():
            raise TrainingError(f"--with {other}: not a finished run folder (no run.json)")
        ocfg, oinfo = load_run(other)
        if oinfo.get("method", "classify") != "classify":
            raise TrainingError(f"--with {other}: a {oinfo['method']} run, not a classifier")
        for key in _SAME:
            if oinfo.get(key) != info.get(key):
                raise TrainingError(
                    f"--with {other}: its {key} ({oinfo.get(key)}) differ from {run}'s "
                    f"({info.get(key)}); an ensemble's members must take the same images "
                    "and give the same classes"
                )
        if (ocfg.model.image_size, ocfg.model.color) != (cfg.model.image_size, cfg.model.color):
            raise TrainingError(
                f"--with {other}: it takes {ocfg.model.image_size} px {ocfg.model.color} "
                f"images, {run} takes {cfg.model.image_size} px {cfg.model.color}"
            )
        osplits = _split_files(other)
        if osplits != splits:
            leaked = set(osplits.get("train", [])) & set(
                splits.get("val", []) + splits.get("test", [])
            )
            raise TrainingError(
                f"--with {other}: it was split differently from {run}"
                + (
                    f" ({len(leaked)} of {run}'s validation and test images are among its "
                    "training images)"
                    if leaked
                    else ""
                )
                + "; train the members on the same split (the same split.seed, or the "
                "dataset's own split) so that validation stays unseen by every member"
            )
        members.append((other, ocfg, oinfo))
    return members


def ensemble_model(nets: list):
    """One network: the mean of ``nets``' probabilities (and of their class maps, when
    every net gives one)."""
    from ..common.tf import keras

    ops = keras.ops
    first = nets[0]
    x = keras.Input(shape=tuple(first.inputs[0].shape[1:]), dtype=first.inputs[0].dtype)
    outs = []
    for i, net in enumerate(nets):
        net.name = f"member{i}"  # functional graphs need distinct sub-model names
        outs.append(net(x))
    two = all(isinstance(o, (list, tuple)) for o in outs)
    probs = ops.mean(ops.stack([o[0] if two else o for o in outs], axis=0), axis=0)
    if not two:
        return keras.Model(x, probs, name=f"ensemble{len(nets)}")
    maps = ops.mean(ops.stack([o[1] for o in outs], axis=0), axis=0)
    return keras.Model(x, [probs, maps], name=f"ensemble{len(nets)}")


def ensemble_record(members: list[tuple], threshold_of_first: float) -> dict:
    """The manifest's ``ensemble``: which runs, and the first run's own threshold beside."""
    return {
        "members": [
            {"run": str(run), "name": info.get("name", Path(run).name), "seed": cfg.train.seed}
            for run, cfg, info in members
        ],
        "meaning": f"the mean of the {len(members)} members' class probabilities; the "
        "threshold chosen again on validation with the first run's policy",
        "threshold_of_first_run": threshold_of_first,
    }
