"""Helpers of the review app's tests: recordings written by the real recorder, a config,
users, evaluation reports in ``inspector evaluate``'s format, a seeded dataset, and a
logged-in in-process client with the few readers of its pages that many tests share."""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import cv2
import numpy as np
from starlette.testclient import TestClient

from inspector.contract.records import Reason, Verdict
from inspector.review import auth
from inspector.review.app import create_app
from inspector.review.config import load_review_config
from inspector.station.config import RecorderSection
from inspector.station.metrics import Metrics
from inspector.station.recorder import Recorder

PASSWORD = "correct horse battery"
T0 = 1_796_000_000.0  # 2026-11-29T...Z


def part_image(defect: bool, seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(150, 12, (size, size)), 0, 255).astype(np.uint8)
    if defect:
        cv2.line(img, (8, 8 + seed % 40), (56, 20 + seed % 30), 20, 3)
    return img


def make_recordings(root: Path, n: int, station_seed: int = 0) -> list[Verdict]:
    """``n`` parts kept by the real recorder: every third passed, the others failed."""
    rec = Recorder(RecorderSection(path=root, pass_sample_rate=1.0), Metrics())
    out = []
    for i in range(n):
        passed = i % 3 == 0
        uncertain = i % 5 == 4 and not passed
        score = 0.1 + 0.8 * ((i * 37) % 100) / 100
        t = T0 + 60 * i
        v = Verdict(
            part_id=f"P-{station_seed}-{i:04d}" if i != 7 else "../../etc/passwd",
            seq=i,
            result="pass" if passed else "fail",
            reason=Reason.OK if passed else (Reason.UNCERTAIN if uncertain else Reason.DEFECT),
            label="good" if passed else "defect",
            scores={"good": round(1 - score, 4), "defect": round(score, 4)},
            thresholds={"defect": 0.5},
            model_id="demo@1" if i % 2 else "demo@2",
            t_trigger=t,
            t_capture=t,
            t_verdict=t + 0.02,
            deadline=t + 1,
            deadline_mono=0.0,
        )
        rec.write(v, part_image(not passed, i))
        out.append(v)
    return out


def seed_dataset(root: Path, per_class: int = 12) -> None:
    for cls, defect in (("good", False), ("scratch", True)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / cls / f"seed_{i:03d}.png"), part_image(defect, 1000 + i))


def write_config(tmp: Path, train_args: str = "[--image-size, '32', --model, cnn]") -> Path:
    path = tmp / "review.yaml"
    path.write_text(
        f"""
database: db/review.sqlite
cache: cache
rescan_s: 0
page_size: 20
recordings:
  - station: line1
    path: rec1
  - station: line2
    path: rec2
dataset:
  path: data
  good: good
  defects: [scratch, crack]
training:
  runs: runs
  epochs: 2
  args: {train_args}
reports: [reports]
models:
  registry: [registry]
"""
    )
    return path


def make_reports(root: Path, files: list[str]) -> None:
    """Two evaluations of the same images: B fixes two decisions of A and breaks one."""
    for name, flip in (("a", set()), ("b", {0, 1, 2})):
        out = root / name
        out.mkdir(parents=True)
        rows, cm = [], [[0, 0], [0, 0]]
        for i, f in enumerate(files):
            label = "scratch" if i % 2 == 0 else "good"
            right = (i % 3 != 0) if name == "a" else (i % 3 != 0) != (i in flip)
            fail = (label == "scratch") == right
            cm[1 if label == "scratch" else 0][1 if fail else 0] += 1
            rows.append([f, label, "0.7" if fail else "0.2", "fail" if fail else "pass"])
        with open(out / "predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "label", "defect_score", "result"])
            w.writerows(rows)
        acc = (cm[0][0] + cm[1][1]) / len(files)
        metrics = {
            "images": len(files),
            "threshold": 0.5,
            "accuracy": acc,
            "f1": acc,
            "balanced_accuracy": acc,
            "auroc": 0.9,
            "defect_recall": cm[1][1] / max(1, sum(cm[1])),
            "escape_rate": cm[1][0] / max(1, sum(cm[1])),
            "false_reject_rate": cm[0][1] / max(1, sum(cm[0])),
            "confusion_matrix": {"classes": ["good", "scratch"], "rows_true_cols_predicted": cm},
        }
        (out / "metrics.json").write_text(json.dumps(metrics))


def workbench(tmp: Path, parts: int = 30):
    """A config over two stations' recordings, a seeded dataset, reports and three users."""
    make_recordings(tmp / "rec1", parts)
    make_recordings(tmp / "rec2", parts // 3, station_seed=1)
    seed_dataset(tmp / "data")
    make_reports(tmp / "reports", [str(p) for p in sorted((tmp / "data").rglob("*.png"))])
    cfg = load_review_config(write_config(tmp))
    app = create_app(cfg)
    store = app.state.bench.store
    for role in auth.ROLES:
        auth.add_user(store, role, PASSWORD, role)
    return cfg, app


def follow(client, r, timeout: float = 300.0, every: float = 0.5):
    """A background job's page (training, export, evaluation) polled as htmx polls it, until
    its block no longer says running; the last response."""
    deadline = time.time() + timeout
    while 'data-status="running"' in r.text and time.time() < deadline:
        time.sleep(every)
        r = client.get(r.url.path, headers={"HX-Request": "1"})
    return r


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def client_as(app, role: str) -> tuple[TestClient, str]:
    """An in-process client logged in as the user ``role`` (workbench's users share the
    role's name); the session's CSRF token."""
    c = TestClient(app)
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"name": role, "password": PASSWORD, "csrf": token, "next": "/"})
    assert r.status_code == 200 and r.url.path == "/"
    return c, csrf_of(r.text)


def total(html: str) -> int:
    """The inbox's count of the parts its filters match."""
    return int(re.search(r"<small>(\d+) part\(s\)", html).group(1))


def ids(app, station: str = "line1") -> dict[str, dict]:
    """part_id -> the store's row (ids follow the order the indexer found the files)."""
    from inspector.review.db.store import PartFilter

    rows = app.state.bench.store.parts(PartFilter(station=station), 0, 1000)
    return {r["part_id"]: r for r in rows}


@contextlib.contextmanager
def serve(app):
    """The app served by uvicorn on a free port (as `inspector review` serves it): (host, port)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


class Http:
    """One keep-alive connection; a reset or a dropped connection is counted, then redialled."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.cookies: dict[str, str] = {}
        self.resets = 0
        self.errors: list[str] = []  # what each reset was
        self.log: list[tuple[str, str, int, bytes, dict]] = []

    def send(self, method: str, path: str, body: bytes | None = None, headers=None):
        jar = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        h = {"Cookie": jar, **(headers or {})}
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        t0 = time.monotonic()
        try:
            self.conn.request(method, path, body=body, headers=h)
            r = self.conn.getresponse()
            data = r.read()
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            self.resets += 1
            self.errors.append(f"{method} {path}: {exc!r} after {time.monotonic() - t0:.1f} s")
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.log.append((method, path, 0, b"", {}))
            return 0, b"", {}
        headers = {k.lower(): v for k, v in r.getheaders()}
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, value = v.split(";")[0].partition("=")
                self.cookies[name] = value.strip('"')
        self.log.append((method, path, r.status, data, headers))
        if r.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return r.status, data, headers

    def form(self, path: str, fields) -> tuple[int, bytes, dict]:
        return self.send("POST", path, urlencode(fields, doseq=True).encode())


def login_http(http_: Http, name: str = "admin") -> str:
    """Log in over ``http_``; the session's CSRF token."""
    status, body, headers = http_.send("GET", "/login")
    token = csrf_of(body.decode())
    status, body, headers = http_.form(
        "/login", {"name": name, "password": PASSWORD, "csrf": token, "next": "/"}
    )
    assert status == 303, body
    status, body, _ = http_.send("GET", "/")
    return csrf_of(body.decode())
