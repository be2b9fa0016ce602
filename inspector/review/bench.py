"""How fast the inbox answers at scale: ``python -m inspector.review.bench``.

Fills a fresh store with N synthetic parts (rows only, as the indexer writes them; 2 %
labelled), then asks the app in-process for inbox pages under typical filters and sorts
(first page, a deep page, filtered, reviewed/unreviewed, score range, a time range inside
the generated data) and for part pages, and reports the server time per page (ASGI call to
the last body byte, no network) with the number of parts each filter matched. Every answer
must be 200 and every filter must match parts, or the bench stops: a timing of an error
page or of an empty result measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .config import DatasetSection, RecordingsSection, ReviewConfig
from .db.store import Store

T0 = 1_796_000_000.0  # the first generated part (2026-11-30T00:53:20Z); one every STEP_S
STEP_S = 3.0


def queries(n: int) -> dict[str, str]:
    """The inbox filters measured; the time range is the second quarter of the generated data."""
    span = n * STEP_S
    since, until = (
        time.strftime("%Y-%m-%dT%H:%M", time.gmtime(T0 + f * span)) for f in (0.25, 0.5)
    )
    return {
        "first page, newest": "",
        f"page {max(1, n // 100)}, newest": f"page={max(1, n // 100)}",
        "station + reason": "station=line2&reason=uncertain",
        "unreviewed, by score": "reviewed=no&sort=score",
        "reviewed": "reviewed=yes",
        "score 0.4-0.6, model": "score_min=0.4&score_max=0.6&model=m%401",
        "time range + class": f"since={since}&until={until}&cls=crack",
    }


def fill(store: Store, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    t0 = T0
    rows = []
    for i in range(n):
        result = "pass" if rng.random() < 0.3 else "fail"
        reason = "ok" if result == "pass" else rng.choice(["defect", "uncertain", "timeout"])
        rows.append(
            {
                "station": f"line{i % 4 + 1}",
                "sidecar": f"d/{i:07d}.json",
                "image": f"d/{i:07d}.png",
                "part_id": f"P{i}",
                "seq": i,
                "t": t0 + i * STEP_S,
                "result": result,
                "reason": reason,
                "class": rng.choice(["good", "crack", "scratch"]),
                "score": rng.random(),
                "model_id": f"m@{i % 3}",
            }
        )
        if len(rows) == 10_000:
            store.add_parts(rows)
            rows = []
    if rows:
        store.add_parts(rows)
    for pid in rng.sample(range(1, n + 1), n // 50):
        part = store.part(pid)
        store.add_label(part, "bench", rng.choice(["good", "crack"]), None)


async def _call(app, path: str, query: str, cookie: str) -> tuple[int, float, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "server": ("bench", 80),
        "client": ("127.0.0.1", 1),
        "headers": [(b"host", b"bench"), (b"cookie", cookie.encode())],
    }
    status = 0
    sent = False
    body = bytearray()

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    t = time.perf_counter()
    await app(scope, receive, send)
    return status, (time.perf_counter() - t) * 1000, bytes(body)


class BenchError(Exception):
    """A measured page was not the page it should be (an error, or an empty result)."""


def run(parts: int, repeats: int = 5, work: Path | None = None) -> dict:
    from . import auth
    from .app import create_app

    work = Path(work or tempfile.mkdtemp(prefix="review-bench-"))
    cfg = ReviewConfig(
        database=str(work / "bench.sqlite"),
        cache=work / "cache",
        rescan_s=0,
        page_size=50,
        recordings=[RecordingsSection(station=f"line{i}", path=work / "rec") for i in (1, 2, 3, 4)],
        dataset=DatasetSection(path=work / "data", defects=["crack", "scratch"]),
    )
    store = Store(cfg.database)
    t = time.perf_counter()
    fill(store, parts)
    fill_s = time.perf_counter() - t
    app = create_app(cfg, store, scan=False)
    auth.add_user(store, "bench", "bench-password", "viewer")
    token, _ = auth.login(store, "bench", "bench-password", 1.0)
    cookie = f"{auth.COOKIE}={token}"

    async def measure() -> dict:
        out = {}
        for name, query in queries(parts).items():
            times, matched = [], None
            for _ in range(repeats):
                status, ms, body = await _call(app, "/", query, cookie)
                if status != 200:
                    raise BenchError(f"{name}: HTTP {status}")
                found = re.search(rb"<small>(\d+) part\(s\)", body)
                matched = int(found.group(1)) if found else 0
                if not matched or b'<tr class="part ' not in body:
                    raise BenchError(
                        f"{name} ({query}): no parts matched; the row measures nothing"
                    )
                times.append(ms)
            out[name] = {**_stats(times), "parts_matched": matched, "query": query}
        times = []
        for pid in random.Random(1).sample(range(1, parts + 1), repeats * 4):
            status, ms, body = await _call(app, f"/part/{pid}", "sort=score", cookie)
            if status != 200 or f"<code>P{pid - 1}</code>".encode() not in body:
                raise BenchError(f"part page {pid}: HTTP {status}, not the part's page")
            times.append(ms)
        out["part page (with previous/next)"] = {**_stats(times), "status": 200}
        return out

    pages = asyncio.run(measure())
    worst = max(p["max_ms"] for p in pages.values())
    return {
        "what": "server time per page of the review app (in-process ASGI call, SQLite)",
        "command": f"python -m inspector.review.bench --parts {parts} --out docs/bench-review.json",
        "parts": parts,
        "page_size": cfg.page_size,
        "repeats": repeats,
        "fill_seconds": round(fill_s, 1),
        "pages": pages,
        "worst_ms": round(worst, 1),
        "budget_ms": 300,
        "within_budget": worst <= 300,
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
    }


def _stats(times: list[float]) -> dict:
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inspector.review.bench", description=__doc__)
    p.add_argument("--parts", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = run(args.parts, args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
