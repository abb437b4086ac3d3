"""Every command the tool prints for the user to run next works when pasted into a shell."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers.cli import ROOT

from iqa_saliency.io.schema import INCOMPLETE, PER_IMAGE

# slow enough to be interrupted after its first rows (see tests/io/test_resume.py), with overrides the hint must
# carry: a sweep-style list value, a nested key and a value with a space in its folder name
RUN = ["corruption=glass_blur", "severity=2", "dataset.batch_size=1", "dataset.num_workers=0", "figures=0",
       "dataset.resize=448", "dataset.crop=448", "dataset.source.names=[chelsea,coffee,clock,rocket,astronaut,camera]",
       "similarity.quality_map=drop", "pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_the_printed_resume_command_finishes_the_run(tmp_path):
    run = tmp_path / "my runs" / "cell"
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), *RUN, f"hydra.run.dir={run}"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    part = run / f".{PER_IMAGE}.part0"
    deadline = time.time() + 300
    while (not part.exists() or len(part.read_text().splitlines()) < 2) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and (run / INCOMPLETE).exists(), out[-3000:]
    hints = re.findall(r"[Ff]inish (?:it )?with: (.+)$", out, re.M)
    assert hints and len(set(hints)) == 1, out[-3000:]  # the log line and the last line say the same
    pasted = subprocess.run(["bash", "-c", hints[-1]], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] is True and summary["n_images"] == 6
    assert summary["config"]["similarity"]["quality_map"] == "drop" and summary["config"]["corruption"] == "glass_blur"
