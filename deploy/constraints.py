#!/usr/bin/env python3
"""Write ``constraints.txt``: every package defect-inspector pulls in, pinned as installed here.

    python deploy/constraints.py --out constraints.txt      # what ``make constraints`` runs

It is ``pip freeze`` filtered to the project's dependency closure (install_requires and
every extra installed in this environment, followed through each package's own
requirements), so the file pins exactly the versions the test suite ran with and nothing
else that happens to sit in the venv. ``make``, CI (``make test``) and the images install
with ``pip install -c constraints.txt ...``.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "defect-inspector"
SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"

HEADER = """\
# Pinned versions of everything defect-inspector installs (install_requires and the extras
# installed in the environment that produced it), as `make test` ran with them.
# Produced by `make constraints`: it upgrades .venv to the newest versions setup.cfg allows
# (pip install --upgrade --upgrade-strategy eager -e '.[dev,train,genicam,pretrained-large]')
# and runs `python deploy/constraints.py --out constraints.txt` (pip freeze filtered to the
# project's dependency closure). Run `make test` after refreshing, and commit both.
# Used as `pip install -c constraints.txt ...` by the Makefile (so CI) and the Dockerfiles.
# Not pinned here: packages only the GPU image installs (tensorrt-cu13) and extras not
# installed when it was produced (gpio).
"""


def _installed(name: str) -> md.Distribution | None:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def project_requirements(setup_cfg: Path = SETUP_CFG) -> list[str]:
    """install_requires and every extra's requirements, as setup.cfg has them now (the
    installed metadata of an editable install is as old as its last ``pip install``)."""
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    lines = cfg.get("options", "install_requires", fallback="").splitlines()
    for _, value in cfg.items("options.extras_require"):
        lines += value.splitlines()
    return [line.strip() for line in lines if line.strip()]


def closure(requirements: list[str] | None = None) -> dict[str, md.Distribution]:
    """{canonical name: installed distribution} of everything the project and its extras need."""
    roots = [Requirement(r) for r in requirements or project_requirements()]
    todo: list[tuple[list[Requirement], set[str]]] = [(roots, set())]
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        reqs, extras = todo.pop()
        for req in reqs:
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ({""} | extras)):
                continue
            dep = _installed(req.name)
            if dep is None:  # an extra's package not installed here (gpiod): not pinned
                continue
            name = canonicalize_name(req.name)
            found[name] = dep
            key = (name, frozenset(req.extras))
            if key not in seen:
                seen.add(key)
                todo.append(([Requirement(r) for r in dep.requires or []], set(req.extras)))
    found.pop(canonicalize_name(PROJECT), None)
    return found


def render(found: dict[str, md.Distribution]) -> str:
    pins = [f"{found[n].metadata['Name']}=={found[n].version}" for n in sorted(found)]
    return HEADER + "\n".join(pins) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="default: standard output")
    args = ap.parse_args()
    text = render(closure())
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}: {text.count('==')} pins", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
