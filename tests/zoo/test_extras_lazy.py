"""The zoo's heavy dependencies are imported only when a zoo model is asked for: never at a module's top level,
and not by loading the entry points."""

from __future__ import annotations

import ast
import subprocess
import sys

from helpers.cli import ROOT

HEAVY = ("timm", "pyiqa", "huggingface_hub")


def test_no_module_level_import_of_the_zoo_packages() -> None:
    found = []
    for path in [*(ROOT / "src").rglob("*.py"), ROOT / "evaluate.py", ROOT / "train.py"]:
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert not found


def test_entry_points_load_without_the_zoo_packages() -> None:
    # huggingface_hub is left out here: other installed packages (Lightning's) may import it themselves
    code = ("import sys, iqa_saliency.cli.evaluate, iqa_saliency.cli.train, iqa_saliency.models.classifier, "
            f"iqa_saliency.attribution; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY[:2]!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
