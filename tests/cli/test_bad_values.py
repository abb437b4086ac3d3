"""Bad values of issue 17, through the CLI: one `error:` line, exit 2, before any model loads (no INCOMPLETE folder
that invites a resume)."""

from __future__ import annotations

import pytest
from helpers.cli import run_cli

from iqa_saliency.cli.checks import SEED_MAX, check_batch_size, check_seed, check_sha256
from iqa_saliency.errors import ConfigError

FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]


def assert_refused(proc, run, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (run / "INCOMPLETE").exists() and not (run / "summary.json").exists()


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
@pytest.mark.parametrize(("override", "needle"), [
    ("dataset.batch_size=0", "dataset.batch_size=0"),
    ("dataset.batch_size=-3", "dataset.batch_size=-3"),
    ("dataset.batch_size=2.5", "dataset.batch_size=2.5"),
    ("seed=99999999999", "from 0 to 4294967295"),
    ("seed=-1", "seed=-1"),
    ("quality.sha256=7916", "read as a number"),
    ("attribution.options.interpolate=area", "attribution.options.interpolate='area'"),
    ("attribution=integrated_gradients attribution.options.n_steps=0", "n_steps"),
    ("attribution=gradcam_plus_plus attribution.options.eps=-1", "eps"),
    ("report.format=jpg", "report.format='jpg'"),
    ("report.dpi=0", "report.dpi=0"),
    ("report.study_figures=true", "dataset.save_images=true"),
])
def test_bad_values_stop_before_models_load(tmp_path, override, needle):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", *override.split(), *FAST, f"hydra.run.dir={run}")
    assert_refused(proc, run, needle)
    assert "GPU available" not in proc.stdout + proc.stderr  # refused before the trainer was built


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_zero_byte_checkpoint(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", *FAST, f"classifier.checkpoint={empty}", f"hydra.run.dir={run}")
    assert_refused(proc, run, str(empty))


def test_value_ranges():
    assert check_seed(0) == 0 and check_seed(SEED_MAX) == SEED_MAX
    for bad in (-1, SEED_MAX + 1, 1.5, True, "3"):
        with pytest.raises(ConfigError):
            check_seed(bad)
    assert check_batch_size(1) == 1
    for bad in (0, -3, 2.5, None, False):
        with pytest.raises(ConfigError):
            check_batch_size(bad)
    assert check_sha256("7916", "quality.sha256") == "7916" and check_sha256(None, "k") is None
    for bad in (7916, "xyz", "a" * 65):
        with pytest.raises(ConfigError):
            check_sha256(bad, "quality.sha256")
