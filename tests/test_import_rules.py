"""The house holds: which package may import which (docs/ARCHITECTURE.md), checked on the source.

Every ``import`` of every module is read with ``ast`` (those inside functions too: a lazy import
is still a dependency), so a new import that breaks a rule fails here with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

from contract.backends import IMPLEMENTATIONS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "train", "export", "calibration", "edge")

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


def test_package_graph_has_no_cycles() -> None:
    edges: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for package, _, name, _ in all_imports():
        root = name.split(".")[0]
        if root in PACKAGES and root != package:
            edges[package].add(root)
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "open":
            raise AssertionError("package cycle: " + " -> ".join([*trail, node]))
        if state.get(node) == "done":
            return
        state[node] = "open"
        for nxt in sorted(edges[node]):
            visit(nxt, [*trail, node])
        state[node] = "done"

    for package in PACKAGES:
        visit(package, [])
    assert edges["contract"] == set()


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
