"""``inspector bench accuracy``: the classifier on ELPV, by the protocol of Deitsch et al. 2019.

Binarised at 0.5, a seeded stratified 75/25 split (1,968 train / 656 test); validation
(early stopping, threshold) is carved from the training part only, and the test part is
used once, for the figures. Trains, exports (with the FP16 and INT8 variants), evaluates
and times the model at batch 1 on the CPU; writes the JSON.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path

from .. import TrainingError, registry
from ..data.elpv import SEED, import_elpv
from .measure import at_default_policy, batch1_speed, cpus


def bench_accuracy(
    out: Path,
    work: Path,
    epochs: int | None = None,
    image_size: int | None = None,
    max_minutes: float | None = None,
    model: str = "efficientnet-lite0",
    reuse: bool = False,
    variants: bool = True,
    tta: bool = False,
    soft_labels: str = "",
    soup: bool = False,
    head: str = "avg",
    head_sharpness: float | None = None,
    settings: tuple[tuple[str, str], ...] = (),
    members: int = 1,
) -> dict:
    """Run the benchmark; writes ``out`` (JSON) and returns it.

    ``efficientnet-lite*`` (the default recipe): ImageNet weights, 2 epochs of the head with
    the backbone frozen, then all blocks fine-tuned with batch norm frozen at a fifth of the
    rate. ``cnn``: the earlier from-scratch
    recipe (per-image standardisation, 90 epochs at 160 px). ``tta``: also export the run with
    test-time flips in the graph (``export --tta``) and test it beside the plain model (speed
    side by side); the choice to test it is made before the test set is seen. ``soft_labels``:
    train towards the experts' defect probabilities (the manifest's ``probability`` column)
    instead of 0/1; the split, validation, threshold and test still use the 0.5 labels.
    ``soup``: ``train.soup: greedy``, the best epochs' weights averaged while validation loss
    does not rise. ``head``: ``model.head`` of efficientnet-lite (``lse``: log-sum-exp of
    every place's logits, sharpness ``head_sharpness``, in place of their mean).
    ``settings``: (key, text) pairs as ``inspector train --set`` takes them, applied over the
    recipe (e.g. ``train.freeze_bn=no``) and recorded in the JSON. ``members``: train the
    recipe that many times (``train.seed`` 1, 2, ...; ``work/run``, ``work/run-2`` ...) and
    judge them as one model (``export --with``: the mean of their probabilities, the
    threshold chosen again on validation); ``max_minutes`` is then each training's share of
    the budget (default: 55 minutes in all), and the training time is their sum.

    Every model is also judged at the default threshold policy (``ThresholdConfig``: escapes
    bounded at 2 %, 95 %), chosen on validation: its escape and false-reject rates on test with
    their counts and exact bounds."""
    pretrained = model.startswith("efficientnet-lite")
    epochs = epochs or (24 if pretrained else 90)
    image_size = image_size or (224 if pretrained else 160)
    if members < 1:
        raise TrainingError(f"--members: at least 1 training, got {members}")
    if max_minutes is None:  # the ensemble shares one budget, the 60 minutes less export
        max_minutes = (50.0 if pretrained else 28.0) if members == 1 else 55.0 / members
    from inspector.station.classifier import Classifier
    from inspector.station.config import ModelSection

    from ..common.config import TrainConfig, override, typed, validate

    kind = registry.get("classify")
    train, export, evaluate = kind.train, kind.export, kind.evaluate

    work = Path(work)
    data = work / "elpv"
    if not (data / "manifest.csv").exists():
        import_elpv(data)
    # the manifest carries the probabilities; its paths and labels, and so the seeded split,
    # are the folders'
    source = data / "manifest.csv" if soft_labels else data
    cfg = TrainConfig(data=source, name=f"elpv-{model}-{image_size}")
    for key, value in {
        "model.type": model,
        "model.image_size": image_size,
        "split.test": 0.25,
        "split.val": 0.75 * 0.15,  # 15% of the training part
        "split.seed": SEED,
        # cells look the same under the 8 flips and quarter turns; small rotations and
        # shifts only add border artefacts, and per-image standardisation makes
        # brightness changes moot
        "model.normalize": "per_image",
        "augment.rot90": True,
        "augment.rotation_deg": 0.0,
        "augment.shift": 0.0,
        "augment.noise": 0.0,
        "train.balance": "none",
        "train.epochs": epochs,
        "train.learning_rate": 0.001,
        "train.patience": 30,
        "train.max_minutes": max_minutes,
        "threshold.policy": "max_f1",
        "soft_labels": soft_labels,
        "train.soup": "greedy" if soup else "none",
    }.items():
        cfg = override(cfg, key, value)
    for key, value in {"model.head": head, "model.head_sharpness": head_sharpness}.items():
        if value is None:
            continue
        cfg = override(cfg, key, value)
    if pretrained:  # the network normalises as it was trained (in the graph)
        for key, value in {
            "model.normalize": "fixed",
            "model.dropout": 0.3,
            "train.learning_rate": 0.001,
            "train.head_epochs": 2,
            "train.fine_tune": "all",
            "train.fine_tune_lr_scale": 0.2,
            "train.patience": 8,
        }.items():
            cfg = override(cfg, key, value)
    for key, text in settings:  # over the recipe, as inspector train --set
        cfg = override(cfg, key, typed(cfg, key, text))
    validate(cfg)
    run_dirs = [work / "run", *(work / f"run-{i}" for i in range(2, members + 1))]
    trained = []  # (run.json, seconds) of each member, the first one first
    for i, run_dir in enumerate(run_dirs):
        member_cfg = override(cfg, "train.seed", cfg.train.seed + i) if i else cfg
        if reuse and (run_dir / "run.json").is_file():  # export, test and time an earlier run
            run = json.loads((run_dir / "run.json").read_text())
            trained.append((run, run["training"]["total_seconds"]))
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            started = time.monotonic()
            run = train(member_cfg, run_dir)
            trained.append((run, time.monotonic() - started))
    run_dir, (run, _) = run_dirs[0], trained[0]
    train_seconds = sum(seconds for _, seconds in trained)
    others = run_dirs[1:]
    model_path = work / "elpv.onnx"
    manifest = export(run_dir, model_path, fp16=variants, int8=variants, members=others)
    # the run's test split, split by the manifest's columns (probability, cell type)
    metrics = evaluate(
        model_path, data / "manifest.csv", work / "report", split="test", run=run_dir
    )
    clf = Classifier(ModelSection(path=model_path, warmup_runs=0))
    speed = batch1_speed(clf)
    variant_results = {}
    for tag, v in manifest.get("variants", {}).items():  # side by side with FP32, same run
        path = model_path.with_name(v["file"])
        vm = evaluate(path, data, work / f"report-{tag}", split="test", run=run_dir)
        vs = batch1_speed(Classifier(ModelSection(path=path, warmup_runs=0)))
        again = batch1_speed(clf)  # FP32 again right after: the ratio is of neighbours
        variant_results[tag] = {
            "file_bytes": v["bytes"],
            "validation_accuracy_change": v["accuracy_change"],
            "test_accuracy": vm["accuracy"],
            "test_auroc": vm["auroc"],
            "test_accuracy_change": vm["accuracy"] - metrics["accuracy"],
            "cpu_fps_batch1": vs["throughput_fps"],
            "cpu_latency_ms_batch1": vs["latency_ms"],
            "speedup_over_fp32": round(vs["throughput_fps"] / again["throughput_fps"], 3),
            "fp32_fps_batch1_alongside": again["throughput_fps"],
        }
    policy = {"fp32": at_default_policy(model_path, run_dir)}
    if tta:
        started = time.monotonic()
        tta_path = work / "elpv.tta.onnx"
        tm = export(run_dir, tta_path, tta=True, members=others)
        export_seconds = time.monotonic() - started
        vm = evaluate(tta_path, data, work / "report-tta", split="test", run=run_dir)
        vs = batch1_speed(Classifier(ModelSection(path=tta_path, warmup_runs=0)))
        again = batch1_speed(clf)
        variant_results["tta"] = {
            "transforms": tm["tta"]["transforms"],
            "threshold": tm["thresholds"]["defect"]["value"],
            "threshold_without_tta": tm["tta"]["threshold_without_tta"],
            "test_accuracy": vm["accuracy"],
            "test_auroc": vm["auroc"],
            "test_accuracy_change": vm["accuracy"] - metrics["accuracy"],
            "test_auroc_change": vm["auroc"] - metrics["auroc"],
            "escape_rate": vm["escape_rate"],
            "false_reject_rate": vm["false_reject_rate"],
            "export_seconds": round(export_seconds, 1),
            "cpu_fps_batch1": vs["throughput_fps"],
            "cpu_latency_ms_batch1": vs["latency_ms"],
            "speedup_over_fp32": round(vs["throughput_fps"] / again["throughput_fps"], 3),
            "fp32_fps_batch1_alongside": again["throughput_fps"],
            "parity": tm["parity"],
        }
        policy["tta"] = at_default_policy(tta_path, run_dir)
    counts = run["dataset"]["counts"]
    result = {
        "protocol": "ELPV binarised at 0.5; seeded stratified 75/25 split; validation carved "
        "from the training part; test used once",
        "model": model,
        "image_size": image_size,
        "soft_labels": soft_labels or None,
        "soup": run["training"].get("soup"),
        "settings": {key: text for key, text in settings} or None,
        "head": {"type": cfg.model.head, "sharpness": cfg.model.head_sharpness}
        if cfg.model.head != "avg"
        else None,
        "members": [
            {
                "run": str(d),
                "seed": cfg.train.seed + i,
                "train_seconds": round(seconds, 1),
                "epochs_run": r["training"]["epochs_run"],
                "best_epoch": r["training"]["best_epoch"],
            }
            for i, (d, (r, seconds)) in enumerate(zip(run_dirs, trained, strict=True))
        ]
        if members > 1
        else None,
        "split_counts": counts,
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "f1": metrics["f1"],
        "auroc": metrics["auroc"],
        "escape_rate": metrics["escape_rate"],
        "false_reject_rate": metrics["false_reject_rate"],
        "confusion_matrix": metrics["confusion_matrix"],
        # ELPV's columns: the annotators' defect probability and the cell type, on test
        "by_column": metrics["by_column"],
        "threshold": manifest["thresholds"]["defect"]["value"],
        "always_good_accuracy": counts["test"]["good"] / max(sum(counts["test"].values()), 1),
        "model_bytes": model_path.stat().st_size,
        "parameters": run["training"]["parameters"],
        "cpu_fps_batch1": speed["throughput_fps"],
        "cpu_latency_ms_batch1": speed["latency_ms"],
        "variants": variant_results,
        "at_default_policy": policy,
        "train_seconds": round(train_seconds, 1),
        "time_spent": {
            "head_seconds": (run["training"].get("fine_tuning") or {}).get("head_seconds"),
            "fine_tune_seconds": run["training"]["fit_seconds"],
            "setup_and_threshold_seconds": round(
                train_seconds
                - run["training"]["fit_seconds"]
                - ((run["training"].get("fine_tuning") or {}).get("head_seconds") or 0),
                1,
            ),
            "image_size": image_size,
            "batch_size": cfg.train.batch_size,
            "max_minutes": max_minutes,
        },
        "recipe": run["training"].get("fine_tuning"),
        "epochs_run": run["training"]["epochs_run"],
        "best_epoch": run["training"]["best_epoch"],
        "parity": manifest["parity"],
        "machine": {"cpus": cpus(), "platform": platform.platform()},
        "versions": run["training"]["versions"],
        "files": {"model": str(model_path), "report": str(work / "report" / "report.html")},
    }
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def cmd_bench_accuracy(args) -> int:
    from ..common.config import set_items

    logging.getLogger("training").setLevel(logging.INFO)
    r = bench_accuracy(
        args.out,
        args.work,
        epochs=args.epochs,
        image_size=args.image_size,
        max_minutes=args.max_minutes,
        model=args.model_type,
        reuse=args.reuse,
        tta=args.tta,
        soft_labels="probability" if args.soft_labels else "",
        soup=args.soup,
        head=args.head,
        head_sharpness=args.head_sharpness,
        settings=tuple(set_items(args.set)),
        members=args.members,
    )
    print(
        f"ELPV test ({sum(r['split_counts']['test'].values())} images): accuracy "
        f"{r['accuracy']:.4f}, AUROC {r['auroc']:.4f}, F1 {r['f1']:.4f}; model "
        f"{r['model_bytes'] / 1e6:.2f} MB, {r['cpu_fps_batch1']:.0f} frames/s at batch 1 "
        f"(CPU); trained in {r['train_seconds'] / 60:.1f} min"
    )
    for tag, p in r["at_default_policy"].items():
        esc, frr = p["test"]["escape_rate"], p["test"]["false_reject_rate"]
        print(
            f"{tag} at the default policy ({p['policy']} {p['target']}): threshold "
            f"{p['threshold']:.4f}; test escapes {esc['k']}/{esc['n']} (upper {esc['upper']}), "
            f"false rejects {frr['k']}/{frr['n']} (upper {frr['upper']})"
        )
    if "tta" in r["variants"]:
        v = r["variants"]["tta"]
        print(
            f"with test-time flips ({v['transforms']} views): accuracy {v['test_accuracy']:.4f}, "
            f"AUROC {v['test_auroc']:.4f}, {v['speedup_over_fp32']}x the plain model's frames/s"
        )
    print(f"wrote {args.out}")
    return 0


def add_args(b) -> None:
    g = b.add_argument_group("bench accuracy (ELPV)")
    g.add_argument("--work", type=Path, default=Path("bench-accuracy"))
    g.add_argument("--epochs", type=int, help="default: 24 (pretrained), 90 (cnn)")
    g.add_argument("--image-size", type=int, help="default: 224 (pretrained), 160 (cnn)")
    g.add_argument("--max-minutes", type=float, help="default: 50 (pretrained), 28 (cnn)")
    g.add_argument(
        "--model-type",
        default="efficientnet-lite0",
        help="architecture for bench accuracy (cnn: the earlier from-scratch recipe)",
    )
    g.add_argument(
        "--reuse",
        action="store_true",
        help="bench accuracy: export, test and time the run already in --work (no training)",
    )
    g.add_argument(
        "--soft-labels",
        action="store_true",
        help="bench accuracy: train towards the experts' defect probabilities, not 0/1",
    )
    g.add_argument(
        "--soup",
        action="store_true",
        help="bench accuracy: average the best epochs (train.soup: greedy)",
    )
    g.add_argument(
        "--head",
        choices=("avg", "lse"),
        default="avg",
        help="bench accuracy: model.head of efficientnet-lite (lse: log-sum-exp over places)",
    )
    g.add_argument(
        "--head-sharpness",
        type=float,
        help="bench accuracy: model.head_sharpness for --head lse (default: the config's)",
    )
    g.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="bench accuracy: a training setting over the recipe, as inspector train --set "
        "takes it (e.g. train.freeze_bn=no); recorded in the JSON",
    )
    g.add_argument(
        "--members",
        type=int,
        default=1,
        metavar="N",
        help="bench accuracy: train the recipe N times (train.seed 1..N) and judge the mean of "
        "their probabilities as one model (export --with); --max-minutes is each one's share "
        "(default: 55 minutes in all)",
    )
    g.add_argument(
        "--tta",
        action="store_true",
        help="bench accuracy: also test the run exported with test-time flips (export --tta)",
    )
