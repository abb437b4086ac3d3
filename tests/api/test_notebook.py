"""examples/quickstart.ipynb: committed without outputs, and its code cells run in order in a fresh interpreter
(nbclient is not a dependency: the cells are read from the .ipynb JSON and executed in one namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.cli import ROOT

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"

# Executes the notebook's code cells as Jupyter would (one namespace, in order), then checks what they built.
RUNNER = """
import json, sys
import matplotlib.pyplot as plt
notebook = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for index, cell in enumerate(c for c in notebook["cells"] if c["cell_type"] == "code"):
    exec(compile("".join(cell["source"]), f"quickstart.ipynb code cell {index}", "exec"), namespace)
table, own, result = namespace["table"], namespace["own"], namespace["result"]
assert table.shape == (4, 4) and sorted(result.cells) == [("fog", 1), ("fog", 3), ("motion_blur", 1),
                                                           ("motion_blur", 3)], (table, sorted(result.cells))
assert own.summary["attribution"] == "given:captum.IntegratedGradients", own.summary["attribution"]
assert own.summary["weights"]["classifier"]["name"] == "given:MobileNetV3"
assert len(own.rows) == 3 and own.rows["sim_cc"].notna().all()
assert len(plt.get_fignums()) == 1
print("notebook ran")
"""


def test_the_notebook_is_committed_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 4
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_the_quickstart_notebook_runs(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(NOTEBOOK)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "notebook ran" in proc.stdout
    assert not list(tmp_path.iterdir())  # nothing written where it ran
