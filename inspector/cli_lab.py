"""The lab's verbs: ``simulate`` (a conveyor in software, scored), ``bench`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("inspector")


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
            timeout_margin_ms=args.timeout_margin_ms,
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


def _cmd_demo(args) -> int:
    from .lab.demo import prepare, run_demo

    if args.prepare:
        truth = prepare(args.prepare, parts=args.parts)
        print(
            f"demo: wrote {len(truth)} parts to {args.prepare}/parts and the model to "
            f"{args.prepare}/model/demo.onnx"
        )
        return 0
    return run_demo(
        parts=args.parts, rate=args.rate, broker=args.broker, keep=args.keep, serve=args.serve
    )


def add_parsers(sub) -> argparse._ActionsContainer:
    """Add this group's verbs to the ``inspector`` parser."""
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
    sm.add_argument(
        "--timeout-margin-ms",
        type=float,
        default=20.0,
        help="the inspector fails a part without a verdict this long before its deadline",
    )
    sm.add_argument("--travel-ms", type=float, default=1200.0, help="trigger to reject gate")
    sm.add_argument("--broker", default=None, metavar="HOST:PORT", help="use this broker")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--work", type=Path, default=None, help="keep the run's files here")
    sm.add_argument("--out", type=Path, default=None, help="write the scorecard JSON here")
    sm.set_defaults(func=_cmd_simulate)

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

    d = sub.add_parser("demo", help="run a station on synthetic parts with a local broker")
    d.add_argument("--parts", type=int, default=60, help="number of parts to inspect")
    d.add_argument("--rate", type=float, default=15.0, help="parts per second")
    d.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto")
    d.add_argument("--keep", type=Path, default=None, help="keep the demo's files in this folder")
    d.add_argument(
        "--serve",
        type=int,
        nargs="?",
        const=8470,
        default=None,
        metavar="PORT",
        help="after the replay keep the line running and serve the QA workbench on PORT "
        "(default 8470) until Ctrl-C",
    )
    d.add_argument(
        "--prepare",
        type=Path,
        default=None,
        metavar="DIR",
        help="only write the demo model and parts into DIR (for deploy/examples)",
    )
    d.set_defaults(func=_cmd_demo)
    return b
