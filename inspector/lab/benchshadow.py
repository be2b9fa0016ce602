"""What a shadow model costs the live line: the station with and without ``model.shadow``.

    python -m inspector.lab.benchshadow --out shadow.json [--model M.onnx] [--share 0.3]

Two runs each way, in-process (verdicts to a sink, no broker): flat out (throughput of the
live verdicts) and paced at 100 parts/s (live end-to-end latency). The shadow model is a
copy of the live one under another name: the same cost, the worst case for a candidate of
the same architecture.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from ..station.config import load_config
from .bench import station_run
from .demo import prepare
from .swapfault import model_variants


def _yaml(model: Path, parts: Path, rate: float, shadow: Path | None, share: float) -> str:
    extra = f', shadow: "{shadow}", shadow_max_share: {share}' if shadow else ""
    return f"""\
station: {{id: bench}}
source: {{type: folder, path: "{parts}", recursive: true, rate_fps: {rate}, loop: true}}
trigger: {{type: free-run}}
part: {{deadline_ms: 5000}}
pipeline: {{queue_size: 64, when_full: wait}}
model: {{path: "{model}", max_batch: 8, warmup_runs: 5{extra}}}
mqtt: {{outbox_size: 100000}}
recorder: {{enabled: false}}
metrics: {{enabled: false}}
"""


@contextlib.contextmanager
def _watching():
    """The Stations ``station_run`` builds, to read their shadow counters afterwards."""
    from ..station import pipeline

    made, real = [], pipeline.Station

    class Watched(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    pipeline.Station = Watched
    try:
        yield made
    finally:
        pipeline.Station = real


def run(model: Path | None, share: float, frames: int, paced_frames: int, work: Path) -> dict:
    prepare(work / "demo", parts=60)
    parts = work / "demo" / "parts"
    model = model or work / "demo" / "model" / "demo.onnx"
    shadow = model_variants(model, work / "shadow")["v2"]
    out = {}
    for name, rate, n in (("flat_out", 100000.0, frames), ("paced_100fps", 100.0, paced_frames)):
        for label, sh in (("live_only", None), ("with_shadow", shadow)):
            cfg = work / f"{name}-{label}.yaml"
            cfg.write_text(_yaml(model, parts, rate, sh, share))
            load_config(cfg)  # fail early on a bad config
            with _watching() as stations:
                r = station_run(cfg, n, None, mqtt_out=False)
            m = stations[0].metrics
            out.setdefault(name, {})[label] = {
                "throughput_fps": r["throughput_fps"],
                "e2e_latency_ms": r["e2e_latency_ms"],
                "failed_safe": r["failed_safe"],
                "shadow_parts": {
                    k: m.value("inspector_shadow_parts_total", outcome=k)
                    for k in ("compared", "skipped")
                },
            }
    flat = out["flat_out"]
    paced = out["paced_100fps"]
    out["throughput_ratio"] = round(
        flat["with_shadow"]["throughput_fps"] / flat["live_only"]["throughput_fps"], 3
    )
    out["paced_p99_delta_ms"] = round(
        paced["with_shadow"]["e2e_latency_ms"]["p99"] - paced["live_only"]["e2e_latency_ms"]["p99"],
        3,
    )
    out["shadow_max_share"] = share
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inspector.lab.benchshadow")
    p.add_argument("--model", type=Path, default=None, help="default: the demo model")
    p.add_argument("--share", type=float, default=0.3)
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--paced-frames", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(a.model, a.share, a.frames, a.paced_frames, Path(tmp))
    text = json.dumps(r, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
