"""An offline wandb sweep is self-contained: nothing under ~/.local/share/wandb or ~/.cache/wandb (HOME is a
temporary folder here), and every media file its runs' tables and artifact manifests reference lies inside the
sweep folder. Also: no warning on the console but wandb's offline banner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import ROOT, read_strict_json

# a staged artifact file (tempfile's tmpXXXXXXXX name in wandb's staging folder), as its manifest entry's local
# path appears in a run's .wandb log (a protobuf record: the next byte may be printable, hence the fixed length)
STAGED = re.compile(rb"(/[\x21-\x7e]*?/artifacts/staging/tmp[a-z0-9_]{8})")


def _referenced_media(sweep: Path) -> list[str]:
    found = []
    for table in sweep.rglob("*.table.json"):
        def walk(node, base=table.parents[2]):  # paths in a table are relative to the run's files/ folder
            if isinstance(node, dict):
                if "path" in node and str(node.get("_type", "")).endswith(("file", "image")):
                    found.append(str((base / node["path"]).resolve()))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(json.loads(table.read_text()))
    for log in sweep.rglob("*.wandb"):
        found += [m.decode() for m in STAGED.findall(log.read_bytes())]
    return found


@pytest.mark.slow
def test_demo_sweep_with_wandb_keeps_everything_in_the_sweep_folder(tmp_path):
    home, sweep = tmp_path / "home", tmp_path / "sweep"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "-m", "+experiment=demo", "pretrained=false",
                           "dataset.source.names=[chelsea,coffee]", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (home / ".local" / "share" / "wandb").exists()
    assert not (home / ".cache" / "wandb").exists()
    assert not (home / ".config" / "wandb").exists()
    media = _referenced_media(sweep)
    assert media, "no table media found: did the runs log their per_image tables?"
    outside = [m for m in media if not m.startswith(str(sweep.resolve()))]
    assert not outside, outside[:5]
    missing = [m for m in media if not Path(m).is_file()]
    assert not missing, missing[:5]
    assert len(list(sweep.glob("*/wandb/offline-run-*"))) == 6 and list((sweep / "wandb").glob("offline-run-*"))
    for cell in {run.parents[1] for run in sweep.glob("*/wandb/offline-run-*")}:  # each cell self-contained
        own = _referenced_media(cell)
        assert own and all(m.startswith(str(cell.resolve())) for m in own), own[:5]
    assert read_strict_json(sweep)  # every JSON file of the sweep (report.json, the cells', wandb's) is strict
    console = proc.stdout + proc.stderr
    warnings = [line for line in console.splitlines() if re.search(r"warn", line, re.I)]
    assert not warnings, warnings[:5]
