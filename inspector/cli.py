"""``inspector VERB ...``: a thin dispatcher over the verbs.

User mistakes reach the user as one line per problem and a non-zero exit code (2 for
configuration and model problems); programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import InspectorError

log = logging.getLogger("inspector")


def _cmd_check(args) -> int:
    from .contract.schema import describe_schema
    from .station.config import StationConfig

    if args.schema:
        print("\n".join(describe_schema(StationConfig)))
        return 0
    if not args.config:
        print("inspector check: give a CONFIG file (or --schema)", file=sys.stderr)
        return 2
    try:
        kind = _config_kind(args.config)
    except InspectorError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return exc.exit_code
    problems, notes = _CHECKS[kind](args.config)
    for line in notes:
        print(f"ok: {line}")
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"{args.config}: valid {kind} config")
    return 0


def _config_kinds() -> dict[str, type]:
    from .gate.config import GateConfig
    from .review.config import ReviewConfig
    from .spc.config import SpcConfig
    from .station.config import StationConfig

    kinds = {"station": StationConfig, "gate": GateConfig, "review": ReviewConfig, "spc": SpcConfig}
    try:  # QA's configs; a line PC installed without training/ has none
        from training.common.config import TrainConfig
    except ImportError:
        return kinds
    return {**kinds, "training": TrainConfig}


def _config_kind(path: Path) -> str:
    """station, gate or training, from the file's top-level keys: a gate config has ``gate:``;
    otherwise the kind that alone has one of the keys (``source:``, ``train:`` ...), or that
    alone has them all (``model:`` and ``mqtt:``: a station)."""
    import dataclasses

    from .contract.schema import top_level_keys
    from .errors import ConfigError

    keys = top_level_keys(path)
    kinds = {k: {f.name for f in dataclasses.fields(c)} for k, c in _config_kinds().items()}
    if keys is not None:
        if "gate" in keys:
            return "gate"
        own = {
            kind: set(keys) & (names - set().union(*(n for k, n in kinds.items() if k != kind)))
            for kind, names in kinds.items()
        }
        has_own = [kind for kind, found in own.items() if found]
        fits = [kind for kind, names in kinds.items() if set(keys) <= names]
        for candidates in (has_own, fits):
            if len(candidates) == 1:
                return candidates[0]
    what = "not a station, gate, training, review or SPC config"
    if keys is not None and len(fits) > 1:
        what = f"cannot tell which kind of config this is ({' or '.join(fits)})"
    hint = "" if "training" in kinds else " (training/ is not installed here)"
    raise ConfigError(
        f"{path}: {what}{hint}: a station config has source: and model:, a gate config "
        "gate:, a training config train:, a review config dataset:, an SPC config charts:"
    )


def _check_gate(path: Path) -> tuple[list[str], list[str]]:
    from .gate.config import load_gate_config

    try:
        cfg = load_gate_config(path)
    except InspectorError as exc:
        return exc.problems, []
    tls = cfg.mqtt.tls
    problems = [
        f"mqtt.tls.{key}: file not found: {getattr(tls, key)}"
        for key in ("ca", "cert", "key")
        if tls is not None and getattr(tls, key) is not None and not getattr(tls, key).is_file()
    ]
    g = cfg.gate
    return problems, [f"gate {g.id}: parts of {g.station_prefix}, {g.travel_ms:g} ms to the gate"]


def _check_training(path: Path) -> tuple[list[str], list[str]]:
    from training.common.config import load_train_config, validate

    try:
        validate(load_train_config(path))
    except InspectorError as exc:
        return exc.problems, []
    return [], []


def _check_station(path: Path) -> tuple[list[str], list[str]]:
    from .station.check import check_station

    return check_station(path)


def _check_loads(loader):
    def check(path: Path) -> tuple[list[str], list[str]]:
        try:
            loader(path)
        except InspectorError as exc:
            return exc.problems, []
        return [], []

    return check


def _load_review(path: Path):
    from .review.config import load_review_config

    return load_review_config(path)


def _load_spc(path: Path):
    from .spc.config import load_spc_config

    return load_spc_config(path)


_CHECKS = {
    "station": _check_station,
    "gate": _check_gate,
    "training": _check_training,
    "review": _check_loads(_load_review),
    "spc": _check_loads(_load_spc),
}


def _cmd_run(args) -> int:
    from . import logs
    from .station.config import load_config
    from .station.pipeline import Station

    cfg = load_config(args.config)
    logs.setup(cfg.logging.level, cfg.logging.format)
    station = Station(cfg)
    from .station import systemd
    from .station.models import reload_on_sighup

    stop = _wait_for_signal()
    reload_on_sighup(station.models)  # systemctl reload: the model.path link, read again
    station.start()
    systemd.notify(f"READY=1\nSTATUS=station {cfg.station.id} online")
    interval = systemd.watchdog_interval()
    watchdog = systemd.Watchdog(station.alive, interval) if interval else None
    if watchdog:
        watchdog.start()
    try:
        while not stop.wait(0.2):
            if args.exit_at_end and station.source_ended.is_set() and station.wait_idle(0):
                log.info("replay finished")
                break
    finally:
        systemd.notify("STOPPING=1")
        if watchdog:
            watchdog.stop()
        station.stop()
    return 0


SUCCESS = ("ok", "swapped", "rolled_back", "unchanged", "shadowing")  # model request outcomes


def _cmd_model(args) -> int:
    from .station.modelcmd import format_outcome, request

    outcome = request(
        args.config,
        args.action,
        args.path,
        args.user,
        args.password_file,
        args.timeout,
        anomaly_path=args.anomaly,
    )
    print(format_outcome(outcome))
    return 0 if outcome.get("outcome") in SUCCESS else 1


def _wait_for_signal() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _cmd_gate(args) -> int:
    from . import logs
    from .gate.config import load_gate_config
    from .gate.service import GateService

    cfg = load_gate_config(args.config)
    logs.setup(cfg.logging.level, cfg.logging.format)
    stop = _wait_for_signal()
    gate = GateService(cfg)
    gate.start()
    try:
        stop.wait()
    finally:
        gate.stop()
        log.info("gate stopped: %s", dict(gate.core.counts))
    return 0


def _cmd_simulate(args) -> int:
    import json

    from . import logs
    from .lab.simulator import SimOptions, format_scorecard, simulate

    logs.setup("WARNING")
    card = simulate(
        SimOptions(
            data=args.data,
            model=args.model,
            parts=args.parts,
            rate_ppm=args.rate,
            fault=args.fault,
            part_id_wrap=args.part_id_wrap,
            out=args.out,
            broker=args.broker,
            deadline_ms=args.deadline_ms,
            travel_ms=args.travel_ms,
            fault_s=args.fault_seconds,
            seed=args.seed,
            work=args.work,
        )
    )
    print(format_scorecard(card))
    if args.out:
        print(f"scorecard: {args.out}")
    else:
        print(json.dumps(card, indent=2))
    safe = (
        card["escapes"] == 0
        and card["unaccounted"] == 0
        and card["passed_without_timely_pass"] == 0
    )
    return 0 if safe else 1


def _cmd_calibrate(args) -> int:
    if args.what == "camera":
        from calibration.camera import calibrate_camera, parse_board

        cal = calibrate_camera(
            args.images, parse_board(args.board), args.square_mm, args.plane_image
        )
        args.out.write_text(cal.to_yaml())
        k = cal.camera_matrix
        print(f"{len(cal.per_image_rms)} photos used, {len(cal.skipped)} skipped")
        for line in cal.skipped:
            print(f"  skipped {line}")
        print(
            f"RMS reprojection error {cal.rms_px:.3f} px (worst photo "
            f"{max(cal.per_image_rms.values()):.3f} px); fx {k[0, 0]:.1f} fy {k[1, 1]:.1f} "
            f"cx {k[0, 2]:.1f} cy {k[1, 2]:.1f}; {cal.mm_per_px:.4f} mm/px at the plane of "
            f"{cal.plane_image}"
        )
        for w in cal.warnings:
            print(f"warning: {w}")
        print(f"wrote {args.out}; point preprocess.camera at it")
        return 0
    from calibration.baseline import make_baseline

    args.out.write_text(make_baseline(args.images, station=args.station))
    print(f"wrote {args.out}; point quality.baseline at it")
    return 0


def _cmd_verify(args) -> int:
    from calibration.golden import run_verify

    return run_verify(args.config, args.golden, publish=not args.no_publish, model=args.model)


def _cmd_bench(args) -> int:
    if args.what == "small":
        from training.bench.small import cmd_bench_small

        args.out = args.out or Path("bench-small.json")
        if args.work == Path("bench-accuracy"):
            args.work = Path("bench-small")
        return cmd_bench_small(args)
    if args.what == "anomaly":
        from training.bench.anomaly import cmd_bench_anomaly

        return cmd_bench_anomaly(args)
    if args.what == "accuracy":
        from training.cli import cmd_bench_accuracy

        if not args.out:
            args.out = Path("bench-accuracy.json")
        return cmd_bench_accuracy(args)
    from . import logs
    from .lab.bench import format_bench, run_bench

    logs.setup("WARNING")
    import importlib.util

    # the Keras baseline needs TensorFlow (the train extra); the runtime never does. It runs
    # in a process of its own, so TensorFlow never shares the station's process in the bench.
    keras_baseline = None
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("training"):
        from training.bench.kerastwin import in_subprocess as keras_baseline
    result = run_bench(
        args.model,
        args.frames,
        args.out,
        batch=args.batch,
        paced_fps=args.paced_fps,
        keras_baseline=keras_baseline,
        workers=args.workers,
    )
    print(format_bench(result))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _cmd_review(args) -> int:
    from . import logs
    from .review.config import load_review_config

    cfg = load_review_config(args.config)
    if args.add_user:
        from .review.users import add_user_command

        print(add_user_command(cfg.database, args.add_user, args.role, args.password_file))
        return 0
    from .review.app import serve

    logs.setup(cfg.logging.level, cfg.logging.format)
    print(f"review app on http://{cfg.server.host}:{cfg.server.port}/")
    serve(cfg)
    return 0


def _cmd_spc(args) -> int:
    import json

    from .spc import commands

    if args.what == "report":
        out = args.out or Path("spc-report")
        page = commands.run_report(args.config, args.db, args.t_from, args.t_to, out)
        print(f"wrote {page}")
        return 0
    if args.what == "bench":
        result = commands.run_bench(args.out, args.verdicts, args.quick)
        print(json.dumps(result["summary"], indent=2))
        if args.out:
            print(f"wrote {args.out}")
        return 0
    if not args.config:
        print("inspector spc: give --config spc.yaml", file=sys.stderr)
        return 2
    return commands.run_service(args.config, _wait_for_signal)


def _cmd_demo(args) -> int:
    from .lab.demo import prepare, run_demo

    if args.prepare:
        truth = prepare(args.prepare, parts=args.parts)
        print(
            f"demo: wrote {len(truth)} parts to {args.prepare}/parts and the model to "
            f"{args.prepare}/model/demo.onnx"
        )
        return 0
    return run_demo(parts=args.parts, rate=args.rate, broker=args.broker, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inspector",
        description="Defect Inspector: line-side "
        "visual defect inspection with a fail-safe MQTT verdict per part.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    c = sub.add_parser(
        "check",
        help="validate a station config (with its model and source), a gate or a training config",
    )
    c.add_argument("config", nargs="?", type=Path)
    c.add_argument("--schema", action="store_true", help="list every setting with its default")
    c.set_defaults(func=_cmd_check)

    r = sub.add_parser("run", help="run a station until SIGTERM/SIGINT")
    r.add_argument("config", type=Path)
    r.add_argument(
        "--exit-at-end",
        action="store_true",
        help="stop when a non-looping replay source has delivered its last frame",
    )
    r.set_defaults(func=_cmd_run)

    mo = sub.add_parser(
        "model",
        help="change a running station's model: swap (load, check, golden-verify, go live), "
        "rollback, reload (the model.path link), status, shadow PATH, shadow-stop",
    )
    mo.add_argument(
        "action",
        choices=["swap", "promote", "rollback", "reload", "status", "shadow", "shadow-stop"],
    )
    mo.add_argument("config", type=Path, help="the station's config (broker, prefix)")
    mo.add_argument("path", nargs="?", default=None, help="swap/shadow: the model file")
    mo.add_argument(
        "--anomaly",
        default=None,
        metavar="PATH",
        help="swap/shadow: the unit's anomaly model too ('' for none; default: keep the live one)",
    )
    mo.add_argument("--user", default="admin", help="broker user allowed on PREFIX/cmd/model")
    mo.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="that user's password (default: $INSPECTOR_ADMIN_PASSWORD)",
    )
    mo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    mo.set_defaults(func=_cmd_model)

    g = sub.add_parser("gate", help="run the reference reject gate until SIGTERM/SIGINT")
    g.add_argument("config", type=Path)
    g.set_defaults(func=_cmd_gate)

    sm = sub.add_parser(
        "simulate", help="a conveyor in software: inspector + gate + faults, scored"
    )
    sm.add_argument(
        "--data", type=Path, required=True, help="labelled folder: good/, other folders defects"
    )
    sm.add_argument("--model", type=Path, required=True)
    sm.add_argument("--parts", type=int, default=100)
    sm.add_argument("--rate", type=float, default=240.0, help="parts per minute")
    from .lab.faults import FAULTS

    sm.add_argument("--fault", default="none", choices=FAULTS)
    sm.add_argument(
        "--part-id-wrap",
        type=int,
        default=None,
        metavar="N",
        help="part ids count modulo N, as a PLC part counter that wraps (16-bit: 65536)",
    )
    sm.add_argument("--fault-seconds", type=float, default=2.0, help="how long the fault lasts")
    sm.add_argument("--deadline-ms", type=float, default=1000.0, help="the inspector's deadline")
    sm.add_argument("--travel-ms", type=float, default=1200.0, help="trigger to reject gate")
    sm.add_argument("--broker", default=None, metavar="HOST:PORT", help="use this broker")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--work", type=Path, default=None, help="keep the run's files here")
    sm.add_argument("--out", type=Path, default=None, help="write the scorecard JSON here")
    sm.set_defaults(func=_cmd_simulate)

    cal = sub.add_parser("calibrate", help="camera calibration and image-quality baseline")
    calsub = cal.add_subparsers(dest="what", metavar="WHAT", required=True)
    cc = calsub.add_parser(
        "camera", help="intrinsics, distortion and mm/px from checkerboard photos"
    )
    cc.add_argument("images", type=Path, help="folder of checkerboard photos")
    cc.add_argument("--board", required=True, help="inner corners, COLSxROWS (e.g. 9x6)")
    cc.add_argument("--square-mm", type=float, required=True, help="size of one square")
    cc.add_argument(
        "--plane-image", default=None, help="the photo with the board on the part plane"
    )
    cc.add_argument("--out", type=Path, default=Path("camera.yaml"))
    cb = calsub.add_parser("baseline", help="image-quality baseline of reference images")
    cb.add_argument("images", type=Path)
    cb.add_argument("--out", type=Path, default=Path("baseline.yaml"))
    cb.add_argument(
        "--station",
        type=Path,
        help="measure the images as this station's model sees them (its geometry and bit "
        "depth), as the station's quality watch does; without it, whole frames",
    )
    cal.set_defaults(func=_cmd_calibrate)

    v = sub.add_parser(
        "verify", help="golden samples through the station's real path (exit 1 on disagreement)"
    )
    v.add_argument("config", type=Path)
    v.add_argument("golden", type=Path, help="folder with pass/ and fail/")
    v.add_argument("--no-publish", action="store_true", help="don't publish the outcome over MQTT")
    v.add_argument(
        "--model",
        type=Path,
        help="verify this model file as the station's model (the config is not changed; "
        "nothing is published)",
    )
    v.set_defaults(func=_cmd_verify)

    b = sub.add_parser(
        "bench",
        help="station: bare ONNX Runtime vs the whole station, side by side; "
        "accuracy: train and test the default recipe on ELPV; "
        "small: the same on a generated three-class set (60 images each); "
        "anomaly: good-parts-only models on a generated set and ELPV",
    )
    b.add_argument(
        "what", nargs="?", choices=["station", "accuracy", "small", "anomaly"], default="station"
    )
    b.add_argument(
        "--model",
        type=Path,
        default=None,
        help="default: the demo model; 'random-cnn' (160 px) or 'big-cnn' (300 px): CNNs of "
        "line cost with random weights",
    )
    b.add_argument("--frames", type=int, default=3000)
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--paced-fps", type=float, default=100.0, help="rate of the latency run")
    b.add_argument(
        "--workers", type=int, default=0, help="the station's model.workers (default 0: auto)"
    )
    b.add_argument("--out", type=Path, default=None)
    b.set_defaults(func=_cmd_bench)
    _training_parsers(sub, b)

    rv = sub.add_parser("review", help="the QA workbench: review, relabel, train, compare, promote")
    rv.add_argument("--config", type=Path, required=True, help="review.yaml")
    rv.add_argument(
        "--add-user",
        metavar="NAME",
        help="add or update a user and exit (password: --password-file, INSPECTOR_REVIEW_PASSWORD, "
        "standard input, or asked twice at a terminal)",
    )
    rv.add_argument("--password-file", type=Path, help="--add-user: the password's file")
    rv.add_argument("--role", choices=["viewer", "reviewer", "admin"], default="reviewer")
    rv.set_defaults(func=_cmd_review)

    d = sub.add_parser("demo", help="run a station on synthetic parts with a local broker")
    d.add_argument("--parts", type=int, default=60, help="number of parts to inspect")
    d.add_argument("--rate", type=float, default=15.0, help="parts per second")
    d.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto")
    d.add_argument("--keep", type=Path, default=None, help="keep the demo's files in this folder")
    d.add_argument(
        "--prepare",
        type=Path,
        default=None,
        metavar="DIR",
        help="only write the demo model and parts into DIR (for deploy/examples)",
    )
    d.set_defaults(func=_cmd_demo)

    q = sub.add_parser(
        "spc",
        help="quality over time: SPC charts and alarms on the verdict stream (--config), "
        "report: an HTML page of charts, bench: the figures",
    )
    q.add_argument("what", nargs="?", choices=["run", "report", "bench"], default="run")
    q.add_argument("--config", type=Path, default=None, help="spc.yaml")
    q.add_argument("--db", default=None, help="report: SQLite file or postgresql:// URL")
    q.add_argument("--from", dest="t_from", default=None, help="report: ISO time or Unix s")
    q.add_argument("--to", dest="t_to", default=None, help="report: ISO time or Unix s")
    q.add_argument("--out", type=Path, default=None, help="report: folder; bench: JSON file")
    q.add_argument("--verdicts", type=int, default=1_000_000, help="bench: long-run size")
    q.add_argument("--quick", action="store_true", help="bench: fewer simulations")
    q.set_defaults(func=_cmd_spc)
    return p


def _training_parsers(sub, bench) -> None:
    """The offline verbs (dataset, train, export, evaluate) live with training/.

    The runtime never imports training/ (DESIGN.md); only this dispatcher does, and the
    verbs import TensorFlow when they run. A line PC installed without training/ simply
    lacks these verbs.
    """
    try:
        from training.cli import add_bench_accuracy_args, add_parsers
    except ImportError:
        return
    add_parsers(sub)
    add_bench_accuracy_args(bench)
    from training.cli import extend  # the benches' own arguments (bench anomaly)

    extend(sub, bench)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.verb not in ("run", "gate"):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except InspectorError as exc:
        for line in exc.problems:
            print(f"inspector {args.verb}: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
