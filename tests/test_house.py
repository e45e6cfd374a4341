"""The shape of the house: run-folder file names live in the run room, imports flow one way, no circles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medsynth"

# The data flow, top to bottom: a module may import its own layer and the layers above it (earlier in this list).
LAYERS = [
    {"errors", "provenance", "outputs", "progress", "runtime", "viz", "pages", "config", "stats"},
    {"data"},
    {"conditioning", "models"},
    {"diffusion"},
    {"runs"},
    {"training"},
    {"synthesis"},
    {"privacy", "evaluation"},
    {"exporter"},
    {"demo", "console", "cli", "__main__", "__init__"},
]
SIBLINGS = [{"privacy", "evaluation"}]   # share a layer, never import each other

RUN_FILES = r"checkpoints/|last\.pt|autoencoder\.pt|controlnet\.pt|mask_bank\.npz|config\.yaml|metrics\.csv|run\.json" \
            r"|samples\.csv|generate\.json"
CATALOG_FILES = r"catalog\.csv|split\.csv|ingest\.json"


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def top(name: str) -> str:
    """The room a module belongs to: medsynth.runs.layout -> runs; the package itself -> __init__."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The medsynth modules a module imports: (at module level, inside functions)."""
    outside, inside = set(), set()

    def targets(node) -> set[str]:
        if isinstance(node, ast.ImportFrom) and node.module == "medsynth":
            return {f"medsynth.{a.name}" for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medsynth."):
            return {node.module}
        if isinstance(node, ast.Import):
            return {a.name for a in node.names if a.name.startswith("medsynth.")}
        return set()

    def collect(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            (inside if in_function else outside).update(targets(child))
            collect(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    collect(tree, False)
    return outside, inside


def layer(room: str) -> int:
    return next(k for k, rooms in enumerate(LAYERS) if room in rooms)


def test_every_room_has_a_layer():
    rooms = {top(name) for name in modules()}
    assert rooms <= set().union(*LAYERS), rooms - set().union(*LAYERS)


def test_imports_flow_down_the_house():
    wrong, found = [], modules()
    for name, tree in found.items():
        for target in imports(tree)[0] & set(found):
            here, there = top(name), top(target)
            if layer(there) > layer(here) or (here != there and {here, there} in SIBLINGS):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_circle_and_no_import_hidden_in_a_function():
    found = modules()
    graph = {name: {t for t in imports(tree)[0] if t in found} for name, tree in found.items()}
    hidden = [f"{name}: {sorted(imports(tree)[1])}" for name, tree in found.items()
              if top(name) not in ("cli", "__init__") and imports(tree)[1]]
    assert not hidden, hidden   # the CLI imports each stage lazily, so `medsynth --help` stays fast
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_run_folder_file_names_appear_only_in_the_run_room():
    literal = lambda names: re.compile(rf"""["'](?:[\w./-]*/)?(?:{names})["']""")  # noqa: E731
    run_names, catalog_names = literal(RUN_FILES), literal(CATALOG_FILES)
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        if not rel.startswith("runs/") and run_names.search(text):
            wrong.append(f"{rel}: {run_names.search(text).group()}")
        if not (rel.startswith("runs/") or rel == "data/catalog.py") and catalog_names.search(text):
            wrong.append(f"{rel}: {catalog_names.search(text).group()}")
    assert not wrong, wrong


def test_no_function_in_training_or_the_audit_is_longer_than_60_lines():
    long = []
    for path in [*(PACKAGE / "training").glob("*.py"), PACKAGE / "privacy" / "audit.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length >= 60:
                    long.append(f"{path.name}:{node.name} {length} lines")
    assert not long, long
