"""The rooms of ``inspector/`` and the direction of their imports (see inspector/__init__.py).

Parses every module's imports (top level and inside functions) without running them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "inspector"
SHARED = {"inspector", "inspector.errors", "inspector.logs", "inspector.httpd"}
# room -> rooms (besides itself and the shared modules) it may import
ALLOWED = {
    "contract": set(),
    "station": {"contract", "plant"},  # plant: its config section only
    "gate": {"contract", "plant"},  # plant: the gate's Sparkplug B view
    "lab": {"contract", "station", "gate"},
    "plant": {"contract"},  # Sparkplug B, OPC UA: views beside the station's link
    "review": {"contract"},  # the QA workbench: runs training as a process, never imports it
    "spc": {"contract"},  # quality over time, from the verdict stream
    "": {
        "contract",
        "station",
        "gate",
        "lab",
        "review",
        "spc",
        "plant",
    },  # cli, errors, logs, httpd
}
FORBIDDEN_LIBS = ("tensorflow", "keras", "tf2onnx", "training", "torch")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) for every import in the file."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if node.module is None:  # from . import x: x may be a module
                out += [(node.lineno, f"{target}.{n}", []) for n in names]
            else:
                out.append((node.lineno, target, names))
    return out


def _room(module: str) -> str | None:
    """The room of an inspector module: contract|station|gate|lab|'' (shared); None outside."""
    parts = module.split(".")
    if parts[0] != "inspector":
        return None
    if len(parts) > 2 and parts[1] in ALLOWED:
        return parts[1]
    if len(parts) == 2 and parts[1] in ALLOWED and (PKG / parts[1]).is_dir():
        return parts[1]
    return ""


MODULES = sorted(PKG.rglob("*.py"))


def test_every_room_has_a_docstring_that_says_what_it_may_import():
    rooms = [p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()]
    assert set(rooms) <= set(ALLOWED), f"a room the import rules do not know: {rooms}"
    for room in rooms:
        init = PKG / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "import" in doc, f"{init} needs a docstring naming what it may import"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    me = _room(_module_name(path))
    bad = []
    lazy_training = set()
    if path.name.startswith("cli"):  # the one CLI hands training verbs to training/, lazily
        top = {t for _, t, _ in _imports(path, top_level_only=True)}
        lazy_training = {t for _, t, _ in _imports(path) if t.startswith("training")} - top
    for line, target, names in _imports(path):
        if target in lazy_training:
            continue
        if target.split(".")[0] in FORBIDDEN_LIBS:
            bad.append(f"line {line}: imports {target} (the line PC has no TensorFlow)")
            continue
        room = _room(target)
        if room is None or target in SHARED or room == me or room == "":
            if room == "" and me == "contract" and target not in SHARED:
                bad.append(f"line {line}: contract imports {target}")
            if room is not None and room != me and any(n.startswith("_") for n in names):
                bad.append(f"line {line}: reaches into private names {names} of {target}")
            continue
        if room not in ALLOWED[me]:
            bad.append(f"line {line}: {me or 'shared'} imports {target} ({room})")
        elif any(n.startswith("_") for n in names):
            bad.append(f"line {line}: reaches into private names {names} of {target}")
    assert not bad, "\n".join(bad)


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_inspector_import_names_a_module_that_exists(path):
    """A moved module leaves no import behind (lazy ones inside functions included)."""
    missing = []
    for line, target, names in _imports(path):
        if _room(target) is None or _exists(target):
            continue
        parent, _, name = target.rpartition(".")  # from . import x, where x is a name
        init = ROOT.joinpath(*parent.split(".")) / "__init__.py"
        if not names and init.is_file() and name in init.read_text(encoding="utf-8"):
            continue
        missing.append(f"line {line}: {target}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("folder", ["training", "calibration", "deploy"], ids=lambda f: f)
def test_outside_code_uses_public_names_only(folder):
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, target, names in _imports(path):
            if _room(target) is not None and any(n.startswith("_") for n in names):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {target} {names}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_wrong_arrow(tmp_path, monkeypatch):
    """The test above would fail on a station module that imports the lab."""
    fake = PKG / "station" / "pipeline.py"
    src = "from ..lab.bench import run_bench\nfrom ..gate.core import GateCore\nimport keras\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: src)
    found = [t for _, t, _ in _imports(fake)]
    assert found == ["inspector.lab.bench", "inspector.gate.core", "keras"]
    assert _room(found[0]) == "lab" and "lab" not in ALLOWED["station"]


# -- no cycles, one owner of the MQTT library in the station, modules of one job --------------
def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    """module -> the inspector modules it imports (package imports resolved to their module)."""
    names = {_module_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        mod = _module_name(path)
        out = set()
        for _line, target, imported in _imports(path, top_level_only):
            for cand in [f"{target}.{n}" for n in imported] + [target]:
                if cand in names and cand != mod:
                    out.add(cand)
                    break
        graph[mod] = out
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the modules (packages' own __init__ imports excluded)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n in m.split(".")[:-1]:  # a module importing its own package's __init__
                continue
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if state.get(n) is None and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if state.get(m) is None and (found := visit(m)):
            return found
    return None


def test_no_import_cycles_at_module_level():
    """Imports run at start-up form no cycle (function-level imports may break a tie)."""
    assert _cycle(_graph(top_level_only=True)) is None


def test_the_station_has_one_owner_of_the_mqtt_library():
    """The link to the line keeps paho to itself: publisher.py (the MQTT link) and its I/O."""
    owners = {"inspector.station.publisher", "inspector.station.mqttio"}
    for path in (PKG / "station").rglob("*.py"):
        mod = _module_name(path)
        users = [t for _, t, _ in _imports(path) if t.split(".")[0] == "paho"]
        assert not users or mod in owners, f"{mod} imports {users}: go through station.link"


# the workbench's wings -> what of the workbench each may import (besides itself); the app,
# its pages and the rest of review/ stand above them
REVIEW = "inspector.review"
WINGS = {
    "figures": set(),  # pure functions of files and numbers
    "db": {"files"},  # the database, and the recorders' folders read into it
    "work": {"config", "files", "db", "figures"},  # runs, evaluations, exports, promotion
}


def test_the_workbench_wings_import_down_only():
    bad = []
    for wing, may in WINGS.items():
        for path in (PKG / "review" / wing).rglob("*.py"):
            for line, target, _ in _imports(path):
                if not target.startswith(REVIEW + "."):
                    continue
                first = target[len(REVIEW) + 1 :].split(".")[0]
                if first != wing and first not in may:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not bad, "\n".join(bad)


LONG = 400


def test_a_long_module_says_why_in_its_docstring():
    """A module past ~400 lines holds two jobs, or says in its docstring why it holds one."""
    for path in [
        *MODULES,
        *(ROOT / "calibration").rglob("*.py"),
        *(ROOT / "training").rglob("*.py"),
    ]:
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines <= LONG:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert "Why one module" in doc, f"{path.relative_to(ROOT)}: {lines} lines, no reason"


def test_the_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
