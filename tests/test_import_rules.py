"""The house holds: which package may import which (docs/ARCHITECTURE.md), checked on the source.

Every ``import`` of every module is read with ``ast`` (those inside functions too: a lazy import
is still a dependency), so a new import that breaks a rule fails here with the file and line. The
whole tree (tests, benchmarks and the testbed they share included) has no import circle, between
folders or between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

from contract.backends import IMPLEMENTATIONS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "train", "export", "calibration", "edge")
TREE = (*PACKAGES, "testbed", "benchmarks", "tests")  # every folder of Python code

# first-party imports each package may make besides its own modules (a name allows its submodules)
ALLOWED = {
    "contract": set(),
    "train": {"contract"},
    "export": {"contract", "train.model", "train.checkpoint", "train.torch_backend"},
    "calibration": {"contract"},
    "edge": {"contract"},
}
# third-party imports a package never makes, not even lazily
FORBIDDEN = {
    "contract": {"torch", "paho", "train", "export", "calibration", "edge"},
    "calibration": {"torch", "paho"},
    "edge": {"torch"},
}
# imports that must stay inside functions (lazy): the edge device need not have them
LAZY_ONLY = {
    "contract": {"onnx", "onnxruntime", "tensorrt", "pycuda", "tqdm", "matplotlib"},
    "edge": {"onnxruntime", "tensorrt", "pycuda", "jsonschema"},
}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(f"{node.module}.{alias.name}", node.lineno, id(node) in top) for alias in node.names]
    return found


def covered(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def all_imports():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for name, line, at_top in imports(path):
                yield package, f"{path.relative_to(REPO)}:{line}", name, at_top


def test_first_party_imports_follow_the_house() -> None:
    broken = []
    for package, where, name, _ in all_imports():
        root = name.split(".")[0]
        if root in PACKAGES and root != package and not covered(name, ALLOWED[package]):
            broken.append(f"{where}: {package} imports {name}")
    assert not broken, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(broken)


def test_forbidden_and_lazy_third_party_imports() -> None:
    broken = []
    for package, where, name, at_top in all_imports():
        root = name.split(".")[0]
        if covered(root, FORBIDDEN.get(package, set())):
            broken.append(f"{where}: {package} must never import {root}")
        elif at_top and covered(root, LAZY_ONLY.get(package, set())):
            broken.append(f"{where}: {package} imports {root} at module level; import it where it is used")
    assert not broken, "\n".join(broken)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as [a, b, ..., a], or None when it has none."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if state.get(node) == "open":
            return [*trail[trail.index(node):], node]
        if state.get(node) == "done":
            return None
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            found = visit(nxt, [*trail, node])
            if found:
                return found
        state[node] = "done"
        return None

    for node in sorted(edges):
        found = visit(node, [])
        if found:
            return found
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def tree_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the tree; tests/ helpers also under their flat name
    (``mqtt_fixtures``: pytest puts tests/ on the path and the tests import them so)."""
    modules: dict[str, Path] = {}
    for folder in TREE:
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
            if folder == "tests" and len(parts) == 2:
                modules.setdefault(parts[1], path)
    return modules


def module_graph() -> dict[str, set[str]]:
    """Module -> the modules of the tree it imports (``from a.b import c``: module a.b.c, else a.b)."""
    modules = tree_modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {resolve(name) for name, _, _ in imports(path)}
        edges[module] = {t for t in targets if t is not None and modules[t] != path}
    return edges


def test_package_graph_has_no_cycles() -> None:
    edges: dict[str, set[str]] = {folder: set() for folder in TREE}
    for module, targets in module_graph().items():
        source = module.split(".")[0] if module.split(".")[0] in TREE else "tests"
        for target in targets:
            root = target.split(".")[0] if target.split(".")[0] in TREE else "tests"
            if root != source:
                edges[source].add(root)
    cycle = find_cycle(edges)
    assert cycle is None, "folder cycle: " + " -> ".join(cycle)
    assert edges["contract"] == set()
    for package in PACKAGES:  # the shipped packages need nothing of the tests, benchmarks or testbed
        assert not edges[package] & {"testbed", "benchmarks", "tests"}, f"{package} imports {edges[package]}"
    assert edges["testbed"] <= set(PACKAGES), f"testbed imports {edges['testbed']}: it serves tests and benchmarks"


def test_no_module_of_the_tree_imports_itself_round_a_circle() -> None:
    cycle = find_cycle(module_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_backend_table_names_real_classes_and_only_train_outside_the_contract() -> None:
    # load_backend imports these by name when chosen; the torch backend is the one that lives upstairs
    outside = {module for module, _ in IMPLEMENTATIONS.values() if not module.startswith("contract.")}
    assert outside == {"train.torch_backend"}
    for module, cls in IMPLEMENTATIONS.values():
        path = REPO / (module.replace(".", "/") + ".py")
        classes = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}
        assert cls in classes, f"{module} defines no class {cls}"


def test_database_libraries_stay_with_the_fleet_ingest() -> None:
    # a device installs '.[edge]' without SQLAlchemy/psycopg: only the central-side ingest imports them at
    # module level; the two readers outside it (report --db, fleet summary) import them where they are used
    broken = []
    for package, where, name, at_top in all_imports():
        if name.split(".")[0] not in ("sqlalchemy", "psycopg"):
            continue
        path = where.split(":")[0]
        if path.startswith("edge/ingest/"):
            continue
        if at_top or path not in ("edge/report/db.py", "edge/fleet.py", "edge/ingest/__main__.py"):
            broken.append(f"{where}: {package} imports {name}")
    assert not broken, "\n".join(broken)
