"""The review workbench's training page: one run at a time, its progress, and cancel (with a
fake trainer that writes the real one's files)."""

from __future__ import annotations

import sys
import time

import pytest

from .review_helpers import client_as

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


FAKE_TRAIN = """
import csv, json, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
epochs = int(sys.argv[sys.argv.index("--epochs") + 1])
with open(out + "/history.csv", "w") as f:
    f.write("epoch,loss,val_loss\\n")
for e in range(epochs):
    time.sleep(float(sys.argv[-1]))
    with open(out + "/history.csv", "a") as f:
        f.write(f"{e},{1 / (e + 1):.4f},{1 / (e + 1):.4f}\\n")
    print("epoch", e, flush=True)
json.dump({"ok": True}, open(out + "/run.json", "w"))
"""


def fake_trainer(tmp, app, pause: float):
    script = tmp / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    jobs = app.state.bench.jobs
    real = jobs.command
    jobs.command = lambda out, epochs: [
        sys.executable,
        str(script),
        *real(out, epochs)[3:],
        str(pause),
    ]


def test_training_runs_one_at_a_time_with_progress_and_cancel(bench):
    tmp, cfg, app = bench
    fake_trainer(tmp, app, 0.05)
    c, token = client_as(app, "reviewer")
    assert 'value="2"' in c.get("/train").text  # epochs default from the config
    r = c.post("/train", data={"csrf": token, "name": "r1", "epochs": "3"})
    assert r.status_code == 200
    deadline = time.time() + 20
    while 'data-status="done"' not in (
        page := c.get("/train/1", headers={"HX-Request": "true"}).text
    ):
        assert time.time() < deadline, page
        time.sleep(0.1)
    assert '<b class="epoch">3</b> of 3' in page and "hx-trigger" not in page
    assert "epoch 2" in page and "val_loss" in page
    assert (tmp / "runs" / "r1" / "train.log").is_file()
    viewer, vtoken = client_as(app, "viewer")
    assert (
        viewer.post("/train", data={"csrf": vtoken, "name": "v", "epochs": "1"}).status_code == 403
    )
    fake_trainer(tmp, app, 5)
    c.post("/train", data={"csrf": token, "name": "r2", "epochs": "9"})
    busy = c.post("/train", data={"csrf": token, "name": "r3", "epochs": "1"})
    assert busy.status_code == 400 and "one at a time" in busy.text
    assert 'hx-trigger="every 1s"' in c.get("/train/2", headers={"HX-Request": "true"}).text
    assert "<html" in c.get("/train/2").text  # without htmx: a whole page
    # the app restarts: the run is found again by its pid
    app.state.bench.jobs.procs.clear()
    assert app.state.bench.store.active_runs()[0]["name"] == "r2"
    assert c.post("/train/2/cancel", data={"csrf": token}).status_code == 200
    assert app.state.bench.store.run(2)["status"] == "cancelled"
    assert c.post("/train/2/cancel", data={"csrf": token}).status_code == 409
    assert c.post("/train", data={"csrf": token, "name": "../x", "epochs": "1"}).status_code == 400
    assert c.post("/train", data={"csrf": token, "name": "r1", "epochs": "1"}).status_code == 400
    assert c.get("/train/99").status_code == 404
