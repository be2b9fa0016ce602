"""Small ONNX models built in code, and synthetic part images, for the demo and the tests.

``build_contrast_model`` writes a real ONNX classifier with fixed, hand-set weights: a
local-contrast detector (image minus its 5x5 box blur, absolute value, global max,
logistic). It takes raw uint8 pixels like every model of this project, carries a
manifest, and is right on the images ``synthetic_part`` makes: dark scratches and spots
on a smooth, slightly noisy surface. It is not a trained model; ``inspector train``
(training/) makes those. Needs the ``onnx`` package.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import cv2
import numpy as np

from ..contract.manifest import SCHEMA_VERSION, embed


def demo_manifest(
    size: int,
    name: str,
    channels: int = 1,
    threshold: float = 0.5,
    kind: str = "softmax",
    setup: dict | None = None,
) -> dict:
    """``setup``: the frame setup (``FrameSetup.to_dict()``) to record as the one the model
    was trained with; None leaves it unstated, as in manifests from before it travelled."""
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": ["good", "defect"],
        "defect_classes": ["defect"],
        "input": {
            "name": "image",
            "shape": [None, size, size, channels],
            "dtype": "uint8",
            "layout": "NHWC",
        },
        "preprocess": {
            "size": [size, size],
            "color": "gray" if channels == 1 else "bgr",
            "interpolation": "area",
        },
        "output": {
            "name": "scores",
            "kind": kind,
            "meaning": "probability per class (good, defect)"
            if kind == "softmax"
            else "probability that the part is defective",
        },
        "thresholds": {
            "defect": {
                "value": threshold,
                "policy": "fixed",
                "metrics": {},
                "note": "hand-set for synthetic parts",
            }
        },
        "training": {"method": "hand-built local-contrast detector (inspector.lab.modelkit)"},
    }
    if setup is not None:
        manifest["preprocess"].update(setup)
    return manifest


def build_contrast_model(
    path: Path,
    size: int = 64,
    contrast_at_half: float = 25.0,
    slope: float = 0.3,
    channels: int = 1,
    name: str = "contrast-demo",
    threshold: float = 0.5,
    kind: str = "softmax",
    fixed_batch: int | None = None,
    setup: dict | None = None,
) -> Path:
    """Write the model to ``path`` (with its manifest) and return the path."""
    from onnx import TensorProto, helper, numpy_helper

    k = 5
    big = 1 << 30
    inits = [
        numpy_helper.from_array(
            np.full((1, channels, k, k), 1.0 / (k * k * channels), np.float32), "box"
        ),
        numpy_helper.from_array(
            np.full((1, channels, 1, 1), 1.0 / channels, np.float32), "chan_mean"
        ),
        numpy_helper.from_array(np.array([0, 0, 2, 2], np.int64), "crop_start"),
        numpy_helper.from_array(np.array([big, big, size - 2, size - 2], np.int64), "crop_end"),
        numpy_helper.from_array(np.array(slope, np.float32), "slope"),
        numpy_helper.from_array(np.array(slope * contrast_at_half, np.float32), "offset"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["xf"], ["nchw"], perm=[0, 3, 1, 2]),
        # 5x5 local mean (over channels too), valid padding: (N, 1, H-4, W-4)
        helper.make_node("Conv", ["nchw", "box"], ["blur"]),
        # the pixels at the centres of those windows, averaged over channels
        helper.make_node("Slice", ["nchw", "crop_start", "crop_end"], ["center"]),
        helper.make_node("Conv", ["center", "chan_mean"], ["center_mean"]),
        helper.make_node("Sub", ["center_mean", "blur"], ["dev"]),
        helper.make_node("Abs", ["dev"], ["adev"]),
        helper.make_node("GlobalMaxPool", ["adev"], ["peak4d"]),
        helper.make_node("Reshape", ["peak4d", "flat"], ["peak"]),
        helper.make_node("Mul", ["peak", "slope"], ["z0"]),
        helper.make_node("Sub", ["z0", "offset"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p_defect"]),
    ]
    if kind == "softmax":
        nodes += [
            helper.make_node("Sub", ["one", "p_defect"], ["p_good"]),
            helper.make_node("Concat", ["p_good", "p_defect"], ["scores"], axis=1),
        ]
        out_width = 2
    else:
        nodes += [helper.make_node("Identity", ["p_defect"], ["scores"])]
        out_width = 1
    batch = fixed_batch if fixed_batch else "batch"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, size, size, channels])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, out_width])],
        inits,
    )
    return _save(graph, path, demo_manifest(size, name, channels, threshold, kind, setup))


def _save(graph, path: Path, manifest: dict) -> Path:
    """Check the graph, write it (opset 17) and embed the manifest."""
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="defect-inspector"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    embed(path, manifest)
    return path


def synthetic_part(
    rng: np.random.Generator, defect: bool, size: int = 96, color: bool = False
) -> np.ndarray:
    """A smooth, lightly noisy surface; defective parts carry a dark scratch or spot."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(110, 160)
    gx, gy = rng.uniform(-15, 15, 2)
    img = base + gx * xx + gy * yy + rng.normal(0, 2.0, (size, size))
    if defect:
        mask = np.zeros((size, size), np.uint8)
        if rng.random() < 0.5:
            x0, y0, x1, y1 = rng.integers(size // 6, size - size // 6, 4)
            cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 255, max(2, size // 40))
            if (x0, y0) == (x1, y1):
                cv2.circle(mask, (int(x0), int(y0)), 4, 255, -1)
        else:
            cx, cy = rng.integers(size // 5, size - size // 5, 2)
            cv2.circle(mask, (int(cx), int(cy)), int(rng.integers(3, 7)), 255, -1)
        img = np.where(mask > 0, img - rng.uniform(60, 90), img)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if color else img


def write_parts(
    folder: Path,
    count: int,
    defect_rate: float = 0.3,
    seed: int = 0,
    size: int = 96,
    labelled: bool = True,
) -> dict[str, bool]:
    """Write ``count`` synthetic parts as PNG; returns {file name: is_defect}.

    ``labelled`` puts them in ``good/`` and ``defect/`` sub-folders (the layout the
    trainer and simulator read); otherwise flat, with the label in the file name.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    truth = {}
    for i in range(count):
        defect = bool(rng.random() < defect_rate)
        label = "defect" if defect else "good"
        name = f"{i:05d}_{label}.png"
        target = folder / label / name if labelled else folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), synthetic_part(rng, defect, size))
        truth[name] = defect
    return truth


def build_random_cnn(
    path: Path,
    size: int = 160,
    widths=(16, 32, 64, 128, 256),
    seed: int = 0,
    name: str = "random-cnn",
) -> Path:
    """A CNN of realistic cost (about 0.4 M parameters at 160 px) with random weights.

    For benchmarks only: it has the shape and the cost of a line model, not its skill.
    uint8 NHWC in, softmax over (good, defect) out, with a manifest like every model here.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale")]
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        helper.make_node("Transpose", ["xs"], ["h0"], perm=[0, 3, 1, 2]),
    ]
    cin, prev = 1, "h0"
    for i, cout in enumerate(widths):
        w = rng.normal(0, np.sqrt(2 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"),
        ]
        stride = 2 if i < 4 else 1
        nodes += [
            helper.make_node(
                "Conv",
                [prev, f"w{i}", f"b{i}"],
                [f"c{i}"],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            ),
            helper.make_node("Relu", [f"c{i}"], [f"h{i + 1}"]),
        ]
        cin, prev = cout, f"h{i + 1}"
    wf = rng.normal(0, np.sqrt(1 / cin), (cin, 2)).astype(np.float32)
    inits += [
        numpy_helper.from_array(wf, "wf"),
        numpy_helper.from_array(np.zeros(2, np.float32), "bf"),
        numpy_helper.from_array(np.array([-1, cin], np.int64), "flat"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Reshape", ["gap", "flat"], ["feat"]),
        helper.make_node("Gemm", ["feat", "wf", "bf"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", size, size, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    manifest = demo_manifest(size, name)
    manifest["training"] = {"method": "random weights: a benchmark stand-in, not a trained model"}
    return _save(graph, path, manifest)
