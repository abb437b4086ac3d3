"""Mistyped or mismatched configuration, through the CLI: one `error:` line, exit 2, no run that looks complete."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers.cli import run_cli
from helpers.images import make_image

FAST = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false"]


def checkpoint_args(which: str, path) -> list[str]:
    """Point `which` model at a file; pretrained=false would make the quality model ignore it (untrained)."""
    if which == "quality":  # it is built first, so the offline classifier weights are never reached
        return ["logger=none", f"quality.checkpoint={path}"]
    return [*FAST, f"classifier.checkpoint={path}"]


def assert_refused(proc, run, *needles: str) -> str:
    """Exit 2 with a one-line `error: ...` naming every needle; no summary.json in the run folder."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in last, last
    assert not (run / "summary.json").exists()
    return last


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_unknown_attribution_lists_valid_names(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "attribution.name=gradcamm", *FAST, f"hydra.run.dir={run}")
    assert_refused(proc, run, "Unknown attribution method 'gradcamm'", "gradcam")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_bad_num_workers_is_refused_before_models_load(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "dataset.num_workers=-2", *FAST, f"hydra.run.dir={run}")
    assert_refused(proc, run, "dataset.num_workers=-2", "or auto")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_unknown_classifier_lists_valid_names(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "classifier.arch=resnet19", *FAST, f"hydra.run.dir={run}")
    assert_refused(proc, run, "Unknown classifier 'resnet19'", "resnet18", "resnet50")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
@pytest.mark.parametrize("severity", ["-1", "two"])
def test_severity_outside_0_to_5(tmp_path, severity):
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", "corruption=contrast", f"severity={severity}", *FAST, f"hydra.run.dir={run}")
    assert_refused(proc, run, "out of range", "0 (clean) to 5")


@pytest.mark.slow  # a fresh Python process per run (imports torch): end to end
def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # root ignores permission bits; a file in the path stops anyone
    run = blocker / "run"
    proc = run_cli("evaluate.py", *FAST, f"hydra.run.dir={run}")
    assert_refused(proc, run, "Cannot write to the output folder", str(run), "hydra.run.dir=PATH")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["classifier", "quality"])
def test_checkpoint_of_wrong_architecture_names_keys(tmp_path, which):
    path = tmp_path / "wrong.pth"
    net = torchvision.models.resnet34(weights=None) if which == "classifier" else torchvision.models.resnet18()
    torch.save(net.state_dict(), path)
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", *checkpoint_args(which, path), f"hydra.run.dir={run}")
    last = assert_refused(proc, run, str(path), f"{which}.checkpoint=PATH")
    assert ("unexpected" in last and "layer1.2" in last) if which == "classifier" else "missing" in last


@pytest.mark.slow
@pytest.mark.parametrize("which", ["classifier", "quality"])
def test_truncated_checkpoint(tmp_path, which):
    path = tmp_path / "cut.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    path.write_bytes(path.read_bytes()[:100_000])
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", *checkpoint_args(which, path), f"hydra.run.dir={run}")
    assert_refused(proc, run, "complete PyTorch checkpoint", f"{which}.checkpoint=PATH")


@pytest.mark.slow
@pytest.mark.parametrize("named", [True, False])
def test_checkpoint_class_count_differs_from_dataset(tmp_path, class_folder, named):
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    obj = {"state_dict": net.state_dict()}
    if named:  # as train.py writes it: the classes it was trained on
        obj["iqa_saliency"] = {"arch": "resnet18", "class_names": ["alpha", "beta", "gamma"]}
    path = tmp_path / "three.pth"
    torch.save(obj, path)
    run = tmp_path / "run"
    proc = run_cli("evaluate.py", *FAST, "dataset=folder", f"dataset.root={class_folder}", "dataset.resize=null",
                   "dataset.crop=64", f"classifier.checkpoint={path}", f"hydra.run.dir={run}")
    assert_refused(proc, run, "3", "2", "dataset with the classes it was trained on")
    assert not (run / "per_image.csv").exists()


def test_unnamed_checkpoint_with_matching_class_count_is_accepted(tmp_path, class_folder):
    from iqa_saliency.data.sources import ImageFolder
    from iqa_saliency.evaluation.cell import map_labels
    from iqa_saliency.models.classifier import load_classifier

    path = tmp_path / "two.pth"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), path)
    labels, how = map_labels(ImageFolder(class_folder), load_classifier(checkpoint=str(path)))
    assert how == "class names" and labels == [-1, -1, -1, -1]  # names '0','1' are not 'alpha','beta'
    make_image(class_folder / "gamma" / "x.png")
    with pytest.raises(Exception, match="2 classes but the dataset has 3"):
        map_labels(ImageFolder(class_folder), load_classifier(checkpoint=str(path)))
