"""The entry points answer without loading the heavy libraries: --help, --cfg job, a bad value and tab completion
import no torch, Lightning, captum, wandb, matplotlib, pandas, scipy, ... (benchmarks/startup.py times them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import ROOT, run_cli

from benchmarks.startup import CASES, HEAVY, heavy_modules


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_answering_imports_no_heavy_module_and_leaves_no_folder(case, tmp_path):
    assert heavy_modules(case, tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # a refused run leaves no stub folder (nor an empty outputs/)


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The guard above is not vacuous: the same probe reports the modules of a path that does load them."""
    script = tmp_path / "heavy.py"
    script.write_text("import pandas\n")
    from benchmarks import startup

    case = startup.Case("heavy", str(script), ())
    assert "pandas" in heavy_modules(case, tmp_path)
    assert "pandas" in HEAVY


def test_corruption_names_are_the_backends():
    """The names written out for a quick start-up are imagecorruptions' own, in its order."""
    from imagecorruptions import get_corruption_names

    from iqa_saliency.corruption import corruption_names

    assert corruption_names() == list(get_corruption_names("all"))


def _complete(line: str, tmp_path: Path) -> list[str]:
    """Tab completion as bash does it, through the script `evaluate.py -sc install=bash` prints."""
    (tmp_path / "evaluate.py").write_text((ROOT / "evaluate.py").read_text())  # the script completes paths from $PWD
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HYDRA_FULL_ERROR": "0"}
    cword = len(line.split()) - (0 if line.endswith(" ") else 1)
    script = (f'eval "$(python evaluate.py -sc install=bash)"\n'
              f'COMP_LINE="{line}"; COMP_POINT={len(line)}; COMP_CWORD={cword}\n'
              'hydra_bash_completion\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.split() if w]


@pytest.mark.slow  # 22 Python processes (two per completion); every group option composes in test_configs.py
@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="needs bash")
def test_bash_completion_lists_corruptions_and_every_groups_options(tmp_path):
    from iqa_saliency.corruption import CLEAN, corruption_names

    got = _complete("python evaluate.py corruption=", tmp_path)
    assert sorted(got) == sorted(f"corruption={n}" for n in [CLEAN, *corruption_names()])
    assert _complete("python evaluate.py corruption=gauss", tmp_path) == ["corruption=gaussian_blur",
                                                                            "corruption=gaussian_noise"]
    assert _complete("python evaluate.py severity=", tmp_path) == [f"severity={s}" for s in range(6)]
    conf = ROOT / "conf"
    for group in ("dataset", "classifier", "attribution", "logger", "trainer", "quality", "paths"):
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        assert sorted(_complete(f"python evaluate.py {group}=", tmp_path)) == [f"{group}={o}" for o in options]
    groups = _complete("python evaluate.py ", tmp_path)
    assert "dataset=" in groups and "corruption=" in groups and "recipe=" not in groups


def test_each_entry_points_help_lists_its_own_groups():
    evaluate_help = run_cli("evaluate.py", "--help", timeout=120)
    train_help = run_cli("train.py", "--help", timeout=120)
    assert evaluate_help.returncode == train_help.returncode == 0
    groups = {name: {line.split(":")[0] for line in proc.stdout.split("== Config ==")[0].splitlines() if ": " in line}
              for name, proc in (("evaluate", evaluate_help), ("train", train_help))}
    assert {"dataset", "attribution", "experiment", "check"} <= groups["evaluate"]
    assert "recipe" not in groups["evaluate"]
    assert {"dataset", "recipe"} <= groups["train"] and not {"experiment", "check", "attribution"} & groups["train"]
