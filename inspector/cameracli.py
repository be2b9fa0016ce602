"""``inspector camera list|features|grab``: commissioning a GenICam camera on the line PC.

- ``list``: every GigE Vision / USB3 Vision camera Aravis finds (vendor, model, serial,
  address, interface);
- ``features CAMERA``: its feature tree with values and limits, for writing the station's
  ``source:`` section;
- ``grab CAMERA --frames N [--trigger software] --out DIR``: frames as PNG (16-bit where the
  camera sends more than 8 bits) and ``summary.json``: frames, fps, incomplete and lost
  frames, the stream's packet counters, trigger-to-frame latency.

CAMERA is a serial number, an IP address, a model name or Aravis' device id.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .errors import SourceError


def _find(camera: str, fake: bool):
    from .station.genicam_features import find_device, list_devices

    for key in ("serial", "address", "device_id", "model"):
        try:
            return find_device(**{key: camera}, fake=fake)
        except SourceError:
            continue
    seen = "; ".join(d.label() for d in list_devices(fake)) or "no camera at all"
    raise SourceError(f"no camera with serial, address, id or model {camera!r} (found: {seen})")


def _cmd_list(args) -> int:
    from .station.genicam_features import list_devices

    devices = list_devices(args.fake)
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2))
        return 0
    if not devices:
        print(
            "no GenICam camera found (GigE Vision: same subnet as a NIC of this PC; USB3 "
            "Vision: plugged in and readable by this user)",
            file=sys.stderr,
        )
        return 1
    rows = [("VENDOR", "MODEL", "SERIAL", "ADDRESS", "INTERFACE", "ID")]
    rows += [(d.vendor, d.model, d.serial, d.address, d.interface, d.id) for d in devices]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cmd_features(args) -> int:
    from .station.genicam_features import aravis, feature_tree

    info = _find(args.camera, args.fake)
    try:
        camera = aravis().Camera.new(info.id)
    except Exception as exc:  # GLib.Error: in use by another program, unreachable
        raise SourceError(f"cannot open {info.label()}: {getattr(exc, 'message', exc)}") from None
    tree = feature_tree(camera.get_device())
    if args.json:
        print(json.dumps({"camera": info.as_dict(), "features": tree}, indent=2, default=str))
        return 0
    print(f"# {info.label()}")
    category = None
    for f in tree:
        if f["category"] != category:
            category = f["category"]
            print(f"\n[{category}]")
        print("  " + _feature_line(f))
    return 0


def _feature_line(f: dict) -> str:
    from .station.genicam_features import plain_number

    text = f["name"] if f["type"] == "command" else f"{f['name']} = {f.get('value', '?')!s}"
    if "entries" in f:
        text += f"  ({', '.join(f['entries'])})"
    elif "min" in f:
        unit = f" {f['unit']}" if f.get("unit") else ""
        text += f"  [{plain_number(f['min'])}..{plain_number(f['max'])}{unit}"
        text += f" step {f['inc']}]" if f.get("inc", 1) > 1 else "]"
    text += f"  {f['type']}, {f.get('access', '?')}"
    if f.get("error"):
        text += f"  ({f['error']})"
    return text


def grab(args) -> dict:
    """Grab ``args.frames`` frames; writes them and summary.json under ``args.out``."""
    import cv2
    import numpy as np

    from .station.genicam import GenicamSource
    from .station.genicam_config import CameraTrigger, GenicamSourceConfig

    info = _find(args.camera, args.fake)
    trigger = CameraTrigger(mode=args.trigger, frame_rate=args.rate)
    cfg = GenicamSourceConfig(
        serial=info.serial or None,
        address=None if info.serial else info.address,
        fake=args.fake,
        pixel_format=args.pixel_format,
        trigger=trigger,
    )
    source = GenicamSource(cfg)
    source.open()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    frames, latencies, unanswered = [], [], 0
    t0 = time.monotonic()
    try:
        for _ in range(args.frames):
            sent = source.fire() if args.trigger == "software" else None
            got = _next_frame(source, args.timeout)
            if got is None:
                unanswered += 1
                continue
            if sent is not None:
                latencies.append((time.monotonic() - sent) * 1000.0)
            frames.append(got)
            frames += source.take_queued()  # the frame after one that never arrived
        elapsed = time.monotonic() - t0
    finally:
        source.close()
    written = 0
    for f in frames:
        if f.image is not None:
            image = f.image
            if image.dtype == np.uint16 and (cfg.bit_depth or 16) < 16:
                image = image << (16 - cfg.bit_depth)  # 12-bit data fills a 16-bit PNG
            cv2.imwrite(str(out / f"frame-{f.index:05d}-id{f.frame_id}.png"), image)
            written += 1
    stats = source.stats()
    summary = {
        "camera": info.as_dict(),
        "trigger": args.trigger,
        "frames_requested": args.frames,
        "frames": len(frames),
        "complete": written,
        "incomplete": stats.get("incomplete", 0),
        "lost": stats.get("lost", 0),
        "unanswered": unanswered,
        "fps": round(len(frames) / elapsed, 2) if elapsed > 0 else None,
        "latency_ms": _percentiles(latencies) if latencies else None,
        "stream": {k[7:]: v for k, v in stats.items() if k.startswith("stream_")},
        "clock": {k: stats[k] for k in ("clock_offset_s", "clock_jitter_ms", "clock_drift_ppm")},
        "temperature_c": stats.get("temperature_c"),
        "link_speed": stats.get("link_speed"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _next_frame(source, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        f = source.read()
        if f is not None:
            return f
    return None


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.5), "p95": at(0.95), "max": round(ordered[-1], 2)}


def _cmd_grab(args) -> int:
    s = grab(args)
    lat = s["latency_ms"]
    print(
        f"{s['frames']}/{s['frames_requested']} frames ({s['complete']} complete, "
        f"{s['incomplete']} incomplete, {s['lost']} lost, {s['unanswered']} unanswered) at "
        f"{s['fps']} fps"
        + (f"; trigger to frame p50 {lat['p50']} ms, p95 {lat['p95']} ms" if lat else "")
    )
    print(f"wrote {args.out / 'summary.json'}")
    return 0 if s["complete"] == s["frames_requested"] else 1


def add_parser(sub) -> None:
    """Add ``inspector camera`` to the ``inspector`` parser."""
    p = sub.add_parser("camera", help="GenICam cameras: list, features, grab (commissioning)")
    verbs = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    fake_help = "include Aravis' in-process test camera"

    ls = verbs.add_parser("list", help="every GigE Vision / USB3 Vision camera found")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.add_argument("--fake", action="store_true", help=fake_help)
    ls.set_defaults(func=_cmd_list)

    ft = verbs.add_parser("features", help="a camera's features with values and limits")
    ft.add_argument("camera", help="serial, IP address, model or device id")
    ft.add_argument("--json", action="store_true", help="as JSON")
    ft.add_argument("--fake", action="store_true", help=fake_help)
    ft.set_defaults(func=_cmd_features)

    gr = verbs.add_parser("grab", help="grab frames to a folder with a JSON summary")
    gr.add_argument("camera", help="serial, IP address, model or device id")
    gr.add_argument("--frames", type=int, default=10, help="frames to grab (default 10)")
    gr.add_argument(
        "--trigger",
        choices=("free-run", "software"),
        default="free-run",
        help="free-run, or one software trigger per frame (latency measured)",
    )
    gr.add_argument("--rate", type=float, default=None, help="free-run frames per second")
    gr.add_argument("--pixel-format", default=None, help="PixelFormat, e.g. Mono12")
    gr.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each frame")
    gr.add_argument("--out", type=Path, required=True, help="folder for frames and summary.json")
    gr.add_argument("--fake", action="store_true", help=fake_help)
    gr.set_defaults(func=_cmd_grab)
