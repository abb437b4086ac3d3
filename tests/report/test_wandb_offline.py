"""An offline wandb sweep is self-contained: nothing under ~/.local/share/wandb or ~/.cache/wandb (HOME is a
temporary folder here), and every media file its runs' records, tables and artifact manifests reference lies inside
the sweep folder; a cell folder moved elsewhere keeps every file its run references (read from the run's .wandb log
with wandb's own record types, tests/helpers/wandb_records.py). `wandb sync` itself needs a server, which the tests
cannot reach. Also: no warning on the console but wandb's offline banner."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import ROOT, read_strict_json
from helpers.wandb_records import referenced_files


def _referenced_media(folder: Path) -> list[str]:
    """Every file the offline runs below `folder` reference, as absolute paths: the files and media their records
    name (relative to each run's files/ folder), their artifact entries' local paths and the paths in their tables."""
    found = []
    for table in folder.rglob("*.table.json"):
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
    for log in folder.rglob("*.wandb"):
        relative, artifact_files = referenced_files(log)
        found += [str((log.parent / "files" / path).resolve()) for path in relative] + artifact_files
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


@pytest.mark.slow
def test_a_cell_folder_moved_elsewhere_keeps_every_file_its_wandb_run_references(tmp_path):
    from PIL import Image
    from skimage import data

    photos, home, sweep = tmp_path / "photos", tmp_path / "home", tmp_path / "sweep"
    for folder in (photos, home):
        folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "-m", "corruption=contrast", "severity=1,2",
                           "dataset=folder", f"dataset.root={photos}", "dataset.resize=64", "dataset.crop=64",
                           "allow_untrained_fallback=true", "logger=wandb", "trainer.enable_progress_bar=false",
                           f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = sorted({run.parents[1] for run in sweep.glob("*/wandb/offline-run-*")})
    assert len(cells) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = [Path(shutil.move(str(cell), str(elsewhere / cell.name))) for cell in cells]
    shutil.move(str(sweep), str(tmp_path / "sweep-moved"))  # nothing is left at the old paths
    runs = [*moved, tmp_path / "sweep-moved"]  # the cells and the sweep's report run
    for folder in runs:
        logs = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(logs) == 1, folder
        relative, artifact_files = referenced_files(logs[0])
        assert not artifact_files, artifact_files[:3]  # no artifact naming a file by absolute path
        assert any(p.startswith("media/images/") for p in relative) and any(p.endswith(".table.json")
                                                                            for p in relative), sorted(relative)
        missing = [p for p in relative if not (logs[0].parent / "files" / p).is_file()]
        assert not missing, missing[:5]
    for cell in moved:  # the cell's numbers table and its three preview images per image
        relative, _ = referenced_files(next(cell.glob("wandb/offline-run-*/run-*.wandb")))
        assert len([p for p in relative if p.startswith("media/images/preview/")]) == 12
        table = next(cell.glob("wandb/offline-run-*/files/media/table/per_image_*.table.json"))
        content = read_strict_json(table.parent)[table]
        assert content["columns"][0] == "image_id" and len(content["data"]) == 4
