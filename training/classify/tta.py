"""Test-time flips inside the exported graph (``inspector export --tta``).

The network sees each image under the flips and turns it was trained with (the run's
``augment.flip``: 4 flips; ``augment.rot90`` too: all 8 of the square's symmetries) as one
batch, and the graph returns the mean of the class probabilities; a class map is turned back
to the image's own orientation before it is averaged. The station needs nothing new: the ONNX
file takes the same images and gives the same outputs. The threshold is chosen again, with the
run's own policy, on the averaged validation scores (averaging moves scores toward the middle).

Cost: the network runs on T images per image (T = 4 or 8), so batch-1 latency grows, less than
T-fold on a CPU that is under-used at batch 1.
"""

from __future__ import annotations

from .. import TrainingError

# (transpose, flip rows, flip columns): applied to the image as columns, then rows, then the
# transpose; all 8 are the square's symmetries, the first 4 the flips alone
_ALL = [(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)]


def transforms_of(augment) -> list[tuple[bool, bool, bool]]:
    """The symmetries a run was trained under (its ``augment`` section); TrainingError when
    it was trained under none, or only one kind of quarter turn of a non-square image."""
    if getattr(augment, "rot90", False):
        return list(_ALL)
    if getattr(augment, "flip", False):
        return _ALL[:4]
    raise TrainingError(
        "--tta: the run was trained without flips or quarter turns (augment.flip and "
        "augment.rot90 are off), so its model was never taught that a flipped part is the "
        "same part; test-time flips would only add time"
    )


def _apply(ops, x, transform, first_axis: int):
    """``x`` (N, H, W[, C]) under one symmetry; ``first_axis`` is H's axis (1)."""
    t, r, c = transform
    if c:
        x = ops.flip(x, axis=first_axis + 1)
    if r:
        x = ops.flip(x, axis=first_axis)
    if t:
        axes = list(range(len(x.shape)))
        axes[first_axis], axes[first_axis + 1] = axes[first_axis + 1], axes[first_axis]
        x = ops.transpose(x, axes)
    return x


def _undo(ops, m, transform):
    """The inverse of ``_apply`` on a map (N, h, w): the transpose first, then the flips."""
    t, r, c = transform
    if t:
        m = ops.transpose(m, (0, 2, 1))
    if r:
        m = ops.flip(m, axis=1)
    if c:
        m = ops.flip(m, axis=2)
    return m


def tta_model(net, transforms: list[tuple[bool, bool, bool]]):
    """``net`` (one output: probabilities; or two: probabilities and a class map (N, h, w))
    wrapped so that each image is judged under every transform and the results averaged."""
    from ..common.tf import keras

    ops = keras.ops
    shape = tuple(net.inputs[0].shape[1:])
    if shape[0] != shape[1] and any(t for t, _, _ in transforms):
        raise TrainingError(f"--tta: quarter turns need a square input, not {shape[:2]}")
    x = keras.Input(shape=shape, dtype=net.inputs[0].dtype, name="image")
    batch = ops.concatenate([_apply(ops, x, tr, 1) for tr in transforms], axis=0)
    out = net(batch)
    n = len(transforms)
    two = isinstance(out, (list, tuple))
    probs = out[0] if two else out
    probs = ops.mean(ops.reshape(probs, (n, -1, probs.shape[-1])), axis=0)
    if not two:
        return keras.Model(x, probs, name=f"{net.name}_tta{n}")
    maps = out[1]
    grid = tuple(maps.shape[1:])
    stacked = ops.reshape(maps, (n, -1, *grid))
    back = [_undo(ops, stacked[i], tr) for i, tr in enumerate(transforms)]
    cam = ops.mean(ops.stack(back, axis=0), axis=0)
    return keras.Model(x, [probs, cam], name=f"{net.name}_tta{n}")
