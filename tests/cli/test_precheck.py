"""The command line checked before Hydra writes anything (issue 22): every cell of a sweep, Hydra's own composition
errors as one line, exit 2 with no folder; a corrected command then runs in the same folder. Sweep cell folder
names are unique per set of overrides."""

from __future__ import annotations

import itertools
import random

import pytest
from helpers.cli import run_cli

from iqa_saliency.cli.precheck import check_command_line
from iqa_saliency.cli.schema import CORRUPTIONS
from iqa_saliency.cli.sweep import cell_dirname
from iqa_saliency.errors import ConfigError


def _refused(overrides, task="evaluate", multirun=False):
    with pytest.raises(ConfigError) as info:
        check_command_line(list(overrides), task, multirun)
    assert "\n" not in str(info.value), str(info.value)
    return str(info.value)


@pytest.mark.parametrize("seed", range(3))
def test_a_bad_value_anywhere_in_a_sweep_list_is_found_before_any_cell(seed):
    rng = random.Random(seed)
    names = rng.sample([c for c in CORRUPTIONS if c != "none"], 4)
    bad = rng.choice([names[0].upper(), names[1] + "x", "blur", names[2].capitalize()])
    position = rng.randrange(len(names) + 1)
    values = [*names[:position], bad, *names[position:]]
    message = _refused([f"corruption={','.join(values)}", f"severity={rng.choice(['1', '1,2'])}"], multirun=True)
    assert f"corruption={bad}" in message and message.startswith("sweep cell ")


def test_every_cell_of_a_grid_is_checked():
    assert check_command_line(["corruption=contrast,fog", "severity=1,2,3"], "evaluate", True) == 6
    assert check_command_line(["+experiment=demo"], "evaluate", True) == 6
    message = _refused(["severity=1,2", "dataset=folder,samples", "dataset.crop=224,0"], multirun=True)
    assert "dataset.crop=0" in message
    assert "dataset.small" in _refused(["dataset=folder,samples", "dataset.small=pad"], multirun=True)


def test_train_sweeps_are_checked_too():
    assert check_command_line(["optimizer.lr=0.1,0.01"], "train", True) == 2
    assert "optimizer.name" in _refused(["optimizer.name=sgd,adam"], "train", True)


@pytest.mark.parametrize(("overrides", "needles"), [
    (["dataset.fooo=1"], ["dataset.fooo", "+dataset.fooo"]),
    (["dataset.small=pad"], ["dataset=folder"]),  # samples has no `small`; folder has
    (["dataset=fooo"], ["folder, mit_indoor, samples"]),
    (["attribution=gradcm"], ["Did you mean gradcam"]),
    (["severity=1,2"], ["severity=1,2"]),
    (["corruption=[a"], ["corruption=[a"]),
])
def test_hydras_composition_errors_are_one_line(overrides, needles):
    message = _refused(overrides)
    for needle in needles:
        assert needle in message, message


def test_hydras_own_overrides_do_not_count_as_cells(tmp_path):
    assert check_command_line(["corruption=contrast,fog", f"hydra.sweep.dir={tmp_path}", "logger=none"],
                              "evaluate", True) == 2


def test_colliding_override_texts_get_unique_folder_names():
    roots = ["/d/x_y", "/d/x/y", "/d/x y", "/d/x:y", "/d/x*y", "d/x/y", "/d/x_y/", "/d/x\\y", "/d/x?y", "/d/x\udcffy"]
    names = [cell_dirname(0, f"dataset.root={r}") for r in roots]
    assert len(set(names)) == len(names)
    for name in names:
        assert "/" not in name and len(name.encode()) <= 200 and name.isprintable()
    long = ["x=" + "a" * 300 + s for s in ("1", "2", "/", "_")]
    assert len({cell_dirname(0, v) for v in long}) == len(long)
    for a, b in itertools.combinations(["corruption=contrast,severity=1", "corruption=contrast,severity=2"], 2):
        assert cell_dirname(0, a) == a and cell_dirname(0, b) == b  # plain names stay as they were


# -------------------------------------------------------------------------------------- through the entry points
FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false", "figures=0", "dataset.num_workers=0"]


@pytest.mark.parametrize("override", ["maps_format=nzp", "corruption_backend=Torch", "dataset.corrupt_at=ful_size",
                                      "save_maps=no", "figures=abc", "dataset.crop=100.5", "+foo=1", "dataset.fooo=1"])
def test_refused_before_hydra_creates_the_folder(tmp_path, override):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", *FAST, "dataset=folder", f"dataset.root={tmp_path}", override, f"hydra.run.dir={run}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert not run.exists()


def test_a_sweep_with_one_bad_cell_creates_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("evaluate.py", "-m", *FAST, "corruption=contrast,MOTION_BLUR,brightness", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2 and "MOTION_BLUR" in proc.stderr and "Did you mean motion_blur" in proc.stderr
    assert not sweep.exists()


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_the_corrected_command_runs_in_the_same_folder(tmp_path, resume):
    from helpers.images import make_image

    for i in range(2):
        make_image(tmp_path / "data" / f"im{i}.png", size=(72, 72), seed=i)
    run = tmp_path / "run"
    # 64 px: Grad-CAM's layer4 is 2x2 there (at 32 px it is 1x1, which the layer check refuses)
    args = [*FAST, "dataset=folder", f"dataset.root={tmp_path / 'data'}", "dataset.resize=64", "dataset.crop=64",
            f"hydra.run.dir={run}", *(["resume=true"] if resume else [])]
    assert run_cli("evaluate.py", *args, "maps_format=nzp").returncode == 2
    assert run_cli("evaluate.py", *args, "attribution.options.layer=net.layer5").returncode == 2
    proc = run_cli("evaluate.py", *args, "maps_format=npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "summary.json").is_file() and not (run / "INCOMPLETE").exists()
