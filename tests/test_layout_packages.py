"""The rooms of ``training/`` and ``calibration/`` and the direction of their imports (see
training/__init__.py), as tests/test_layout.py holds them for ``inspector/``.

Parses every module's imports (top level and inside functions) without running them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "calibration")
# training's rooms, lowest first: a module imports its own room and lower ranks only
RANK = {
    "training": 0,  # the package itself: TrainingError
    "training.data": 1,
    "training.common": 2,
    "training.classify": 3,  # the model kinds: neither imports the other
    "training.anomaly": 3,
    "training.registry": 4,
    "training.bench": 5,
    "training.cli": 6,
    "training.demo_model": 6,
}
SHARED = {"inspector", "inspector.errors", "inspector.logs"}
CALIBRATION_MAY_USE = ("inspector.contract", "inspector.station")
TRAINING_NEVER = ("inspector.cli", "inspector.lab", "inspector.review", "inspector.spc")
TRAINING_NEVER += ("inspector.gate",)
# the one exception, with its reason: the demo model is trained on the demo's own parts
EXCEPTIONS = {("training.demo_model", "inspector.lab.modelkit")}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) for every import in the file; ``from X import y``
    where ``X.y`` is a module counts as an import of ``X.y``."""
    mod = _module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            plain = []
            for a in node.names:
                if _is_module(f"{target}.{a.name}", root):
                    out.append((node.lineno, f"{target}.{a.name}", []))
                else:
                    plain.append(a.name)
            if plain:
                out.append((node.lineno, target, plain))
    return out


def _rank_room(module: str) -> tuple[int, str] | None:
    """(rank, room) of a training module; None for one outside the rooms."""
    parts = module.split(".")
    room = ".".join(parts[:2])
    return (RANK[room], room) if room in RANK else None


def _modules(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of training/ and calibration/ it imports (anywhere in it)."""
    graph = {}
    for path in _modules(root):
        me = _module_name(path, root)
        graph[me] = {
            t
            for _, t, _ in _imports(path, root)
            if t.split(".")[0] in PACKAGES and _is_module(t, root) and t != me
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


TRAINING = sorted((ROOT / "training").rglob("*.py"))
CALIBRATION = sorted((ROOT / "calibration").rglob("*.py"))


def _room_problems(path: Path, root: Path = ROOT) -> list[str]:
    me = _module_name(path, root)
    mine = _rank_room(me)
    bad = [] if mine else [f"{me} lies outside training's rooms ({', '.join(RANK)})"]
    for line, target, names in _imports(path, root):
        top = target.split(".")[0]
        if top == "training" and mine:
            theirs = _rank_room(target)
            if theirs is None:
                bad.append(f"line {line}: imports {target}, outside training's rooms")
            elif theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] != mine[1]):
                bad.append(f"line {line}: {mine[1]} imports {target} ({theirs[1]})")
        elif top == "inspector":
            if target.startswith(TRAINING_NEVER) and (me, target) not in EXCEPTIONS:
                bad.append(f"line {line}: imports {target} (a tool or service, not a library)")
            if any(n.startswith("_") for n in names):
                bad.append(f"line {line}: reaches into private names {names} of {target}")
        elif top in ("tensorflow", "keras") and me != "training.common.tf":
            bad.append(f"line {line}: imports {target} (only training.common.tf does)")
    return bad


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: str(p.relative_to(ROOT)))
def test_training_imports_point_down(path):
    """data <- common <- classify, anomaly <- registry <- bench <- cli; no kind imports another;
    nothing imports the command line, the lab or the services of ``inspector``."""
    bad = _room_problems(path)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", CALIBRATION, ids=lambda p: str(p.relative_to(ROOT)))
def test_calibration_uses_the_contract_and_the_station_only(path):
    bad = []
    for line, target, names in _imports(path):
        top = target.split(".")[0]
        if top == "training":
            bad.append(f"line {line}: imports {target} (calibration never imports training)")
        elif top == "inspector" and target not in SHARED:
            if not target.startswith(CALIBRATION_MAY_USE):
                bad.append(f"line {line}: imports {target} (only contract and station)")
            elif any(n.startswith("_") for n in names):
                bad.append(f"line {line}: reaches into private names {names} of {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_in_training_and_calibration():
    """Module-level and function-level imports alike: a cycle is a room that knows too much."""
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_room_says_what_it_holds_and_may_import():
    rooms = [ROOT / "training"] + [
        p for p in (ROOT / "training").iterdir() if (p / "__init__.py").is_file()
    ]
    known = {_module_name(p / "__init__.py") for p in rooms}
    assert known <= set(RANK), f"a room the import rules do not know: {known - set(RANK)}"
    for room in rooms:
        doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "import" in doc, f"{room}/__init__.py needs a docstring naming its imports"
    doc = ast.get_docstring(ast.parse((ROOT / "calibration/__init__.py").read_text()))
    assert doc, "calibration/__init__.py needs a docstring saying what it holds"


def test_every_model_kind_is_registered_and_named_in_the_config():
    """A model kind's room is listed in the registry and in ``TrainConfig.method``."""
    import typing

    from training import registry
    from training.common.config import TrainConfig

    kinds = {
        p.name
        for p in (ROOT / "training").iterdir()
        if (p / "kind.py").is_file() and "KIND = ModelKind(" in (p / "kind.py").read_text()
    }
    assert kinds == set(registry.KINDS)
    method = typing.get_type_hints(TrainConfig)["method"]
    assert set(typing.get_args(method)) == set(registry.KINDS)


def test_the_checker_sees_a_cycle_and_a_wrong_arrow(tmp_path):
    """The rules above would fail on the two cycles and the flat room this layout removed."""
    old = {
        "training/__init__.py": '"""Old, flat."""\n',
        "training/anomaly.py": "from .train import write_json\n",
        "training/train.py": "def f():\n    from .anomaly import fit\n",
        "training/benchanomaly.py": "def g():\n    from inspector.cli import main\n",
        "calibration/__init__.py": '"""Calibration."""\n',
        "calibration/golden.py": "from training.datasets import scan\n",
    }
    for rel, text in old.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    cycles = _cycles(_graph(tmp_path))
    assert cycles == [["training.anomaly", "training.train"]]
    bench = _room_problems(tmp_path / "training/benchanomaly.py", tmp_path)
    assert any("outside training's rooms" in p for p in bench)
    assert any("inspector.cli" in p for p in bench)
    golden = _imports(tmp_path / "calibration/golden.py", tmp_path)
    assert golden == [(1, "training.datasets", ["scan"])]
