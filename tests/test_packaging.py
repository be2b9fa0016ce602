"""A runtime install must not pull TensorFlow onto the line PC; every install takes the lock."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version.strip()
    return out


def lock_module():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "deploy" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_environment_is_the_lock_and_pip_check_passes():
    """What the tests run with is what constraints.txt pins, and it is consistent."""
    wanted = lock_module().closure()
    pinned = pins()
    unpinned = sorted(set(wanted) - set(pinned))
    assert not unpinned, f"not in constraints.txt (run make constraints): {unpinned}"
    drift = {n: (d.version, pinned[n]) for n, d in wanted.items() if d.version != pinned[n]}
    assert not drift, f"installed vs pinned (make install, or make constraints): {drift}"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_install_takes_the_constraints():
    """make (so CI's `make test`) and each image install with `-c constraints.txt`."""
    assert "exec make test" in (ROOT / ".ci" / "run").read_text()
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS\s*:=\s*constraints.txt$", make, re.M)
    target, unconstrained = None, []
    for line in make.splitlines():
        if re.match(r"^[\w$().-]+:", line):
            target = line.split(":")[0]
        is_project = "$(PIP) install" in line and re.search(r" -e | \.\b| '\.\[", line)
        if is_project and target != "constraints" and "-c $(CONSTRAINTS)" not in line:
            unconstrained.append(line.strip())
    assert not unconstrained, unconstrained
    for dockerfile in sorted((ROOT / "deploy" / "docker").glob("Dockerfile.*")):
        text = dockerfile.read_text().replace("\\\n", " ")
        runs = [line for line in text.splitlines() if re.search(r"\bpip (install|wheel)\b", line)]
        assert runs and all(" -c " in line for line in runs), (dockerfile.name, runs)
        assert "constraints.txt" in text


def test_training_image_starts_from_the_pinned_tensorflow():
    text = (ROOT / "deploy" / "docker" / "Dockerfile.train").read_text()
    (tag,) = re.findall(r"^FROM tensorflow/tensorflow:([\w.]+)-gpu", text, re.M)
    assert tag == pins()["tensorflow"]


@pytest.mark.slow
def test_a_clean_install_resolves_to_the_pins(tmp_path):
    """What `make test` installs on a clean clone: resolvable, and exactly the pinned versions."""
    report = tmp_path / "report.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "-c",
            str(CONSTRAINTS),
            f"{ROOT}[dev,train]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0 and (
        "Network is unreachable" in r.stderr or "NewConnectionError" in r.stderr
    ):
        pytest.skip("no package index reachable")
    assert r.returncode == 0, r.stderr
    pinned = pins()
    got = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    got.pop("defect-inspector")
    assert {n: v for n, v in got.items() if pinned.get(n) != v} == {}


@pytest.mark.slow
def test_runtime_install_does_not_resolve_tensorflow(tmp_path):
    report = tmp_path / "report.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0 and (
        "Network is unreachable" in r.stderr or "NewConnectionError" in r.stderr
    ):
        pytest.skip("no package index reachable")
    assert r.returncode == 0, r.stderr
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    assert "onnxruntime-gpu" in names and "paho-mqtt" in names
    assert not {n for n in names if n.startswith(("tensorflow", "keras", "tf2onnx", "tf-"))}, names


def test_runtime_package_never_imports_tensorflow():
    code = (
        "import sys, inspector.cli, inspector.station.pipeline, inspector.station.check, inspector.lab.demo;"
        "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
