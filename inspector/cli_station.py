"""The line verbs: ``run`` (a station), ``model`` (change a running station's unit),
``gate``, ``calibrate`` and ``verify`` (golden parts).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger("inspector")


def _cmd_run(args) -> int:
    from . import logs
    from .station.config import load_config
    from .station.pipeline import Station

    cfg = load_config(args.config)
    logs.setup(cfg.logging.level, cfg.logging.format)
    from .plant.views import build_views

    station = Station(cfg, views=tuple(build_views(cfg.plant, cfg.station.id, cfg.mqtt)))
    from .station import systemd
    from .station.models import reload_on_sighup

    stop = wait_for_signal()
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


SUCCESS = ("ok", "swapped", "rolled_back", "unchanged", "shadowing")


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


def wait_for_signal() -> threading.Event:
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
    stop = wait_for_signal()
    gate = GateService(cfg)
    gate.start()
    try:
        stop.wait()
    finally:
        gate.stop()
        log.info("gate stopped: %s", dict(gate.core.counts))
    return 0


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


def add_parsers(sub) -> None:
    """Add this group's verbs to the ``inspector`` parser."""
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
