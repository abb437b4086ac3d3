"""The package layers (docs/architecture.md): no import from a lower layer to a higher one, no cycles, no Hydra
in the library, no unittest.mock outside the tests, modules and parameter lists of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers.cli import ROOT

PACKAGE = ROOT / "src" / "iqa_saliency"
# lower layers first; a package may import its own layer and the ones before it
LAYERS = [
    {"errors", "heap", "progress", "profiling"},
    {"io"},
    {"models", "corruption", "attribution"},
    {"caches", "report"},
    {"data"},
    {"evaluation", "training", "study"},
    {"cli"},
    {"api"},  # the Python API composes the same configs as the command line
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(p for p in parts if p != "__init__")] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The iqa_saliency modules `name` imports (relative imports resolved), as dotted names below the package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("iqa_saliency"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import figures` imports a module
                full = ".".join([*target, alias.name])
                found.add(full if full in MODULES else ".".join(target))
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("iqa_saliency.")}
    return {m for m in found if m}


MODULES = _modules()


def _top(module: str) -> str:
    return module.split(".")[0]


def test_every_package_has_a_layer():
    tops = {_top(m) for m in MODULES if m}
    assert tops <= set(LAYER_OF), f"place {sorted(tops - set(LAYER_OF))} in LAYERS (and docs/architecture.md)"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m))
def test_no_import_from_a_higher_layer(module):
    mine = LAYER_OF[_top(module)]
    upward = [m for m in _imports(module, MODULES[module]) if LAYER_OF.get(_top(m), -1) > mine]
    assert not upward, f"{module} (layer {mine}) imports {upward}"


def test_no_import_cycles_between_modules():
    graph = {m: {i for i in _imports(m, p) if i in MODULES and i != m} for m, p in MODULES.items() if m}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_library_does_not_import_hydra_outside_the_entry_points():
    offenders = []
    for module, path in MODULES.items():
        if _top(module) in ("cli", "api") or not module:
            continue
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        if any(n == "hydra" or n.startswith(("hydra.", "omegaconf")) for n in names):
            offenders.append(module)
    assert not offenders


def test_no_unittest_mock_outside_the_tests():
    sources = [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), ROOT / "evaluate.py", ROOT / "train.py"]
    assert not [p for p in sources if "unittest.mock" in p.read_text() or "from unittest import mock" in p.read_text()]


def test_modules_and_parameter_lists_stay_readable():
    long_modules = [m for m, p in MODULES.items() if len(p.read_text().splitlines()) > 420]
    assert not long_modules
    wide = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
                names = [a.arg for a in every if a.arg not in ("self", "cls")]
                # the public API's entry point mirrors the command line's options, all keyword-only after the images
                public_keywords = f"{module}.{node.name}" == "api.evaluate_images" and len(args.args) <= 1
                if len(names) > 9 and not public_keywords:
                    wide.append(f"{module}.{node.name} ({len(names)})")
    assert not wide
