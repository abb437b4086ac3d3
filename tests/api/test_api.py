"""The Python API: the README's example runs and gives iqa-evaluate's numbers on the same images; every kind of
image input reaches the models as the same pixels."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.cli import ROOT, run_cli
from PIL import Image

from iqa_saliency.api import InMemoryImages, compose_config
from iqa_saliency.errors import ConfigError


def readme_example(text: str | None = None) -> str:
    """The README's API example: the ```python block after the <!-- api-example ... --> marker, else the first one
    below the first heading naming the API (found by heading, not position: the README's layout changes)."""
    text = (ROOT / "README.md").read_text() if text is None else text
    found = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    if found is None:
        heading = re.search(r"^#{1,6} [^\n]*\bAPI\b", text, re.M)
        found = re.compile(r"^```python\n(.*?)^```", re.S | re.M).search(text, heading.end()) if heading else None
    assert found, "README.md lost its API example (a ```python block under the heading naming the API)"
    return found.group(1)


def test_the_readme_api_example_is_found_by_its_heading_as_the_readme_changes():
    example = readme_example()
    assert "evaluate_images(" in example
    moved = ("# Tool\n\n```python\nprint('quick start')\n```\n\n## Command line\n\n```bash\n# a comment\n```\n\n"
             f"## Python API\n\nSome text.\n\n```python\n{example}```\n\n## More\n\n```python\nother()\n```\n")
    assert readme_example(moved) == example


@pytest.mark.slow
def test_readme_example_gives_the_command_lines_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md (API example)", "exec"), namespace)
    result = namespace["result"]
    assert not list(tmp_path.rglob("per_image.csv"))  # nothing left behind
    run = tmp_path / "cli"
    proc = run_cli("evaluate.py", "dataset=folder", f"dataset.root={tmp_path / 'photos'}", "corruption=motion_blur",
                   "severity=2", "attribution=gradcam", "classifier=resnet18", "allow_untrained_fallback=true",
                   "similarity.quality_map=raw", "logger=none", "figures=0", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = pd.read_csv(run / "per_image.csv", keep_default_na=True)
    api = result.rows
    assert list(api.columns) == list(cli.columns) and len(api) == len(cli) == 2
    for column in cli.columns:  # column by column, every value
        pd.testing.assert_series_equal(api[column], cli[column], check_exact=True, obj=column)
    for image_id, rel in zip(cli["image"], cli["maps"], strict=True):
        with np.load(run / rel) as npz:
            assert set(npz.files) == set(result.maps[image_id])
            for key in npz.files:
                np.testing.assert_array_equal(result.maps[image_id][key], npz[key], err_msg=f"{image_id} {key}")
    import json

    cli_summary = json.loads((run / "summary.json").read_text())
    assert result.summary["metrics"] == cli_summary["metrics"]


def test_every_input_kind_is_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    inputs = [tmp_path / "a.png", Image.fromarray(array), array, tensor, tensor.float() / 255.0,
              array.astype(np.float64) / 255.0]
    source = InMemoryImages(inputs)
    assert [r.image_id for r in source.records] == ["a.png", *[f"image_{i:03d}" for i in range(1, 6)]]
    for record in source.records:
        np.testing.assert_array_equal(np.asarray(source.load(record)), array, err_msg=record.image_id)
    batch = InMemoryImages(torch.stack([tensor, tensor]), names=["x", "y"], labels=[1, 2])
    assert [(r.image_id, r.label) for r in batch.records] == [("x", 1), ("y", 2)] and batch.imagenet_labels
    assert batch.stamp(batch.records[0]) == batch.stamp(batch.records[1])  # the same pixels


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ConfigError, match="No images"):
        InMemoryImages([])
    with pytest.raises(ConfigError, match="unique"):
        InMemoryImages([np.zeros((8, 8, 3), np.uint8)] * 2, names=["a", "a"])
    with pytest.raises(ConfigError, match="labels"):
        InMemoryImages([np.zeros((8, 8, 3), np.uint8)], labels=[1, 2])


def test_a_bad_override_is_a_one_line_value_error_before_any_cell_runs(monkeypatch):
    """Every cell's configuration is checked as the command line's is, before the first cell starts."""
    import iqa_saliency.api as api

    monkeypatch.setattr(api, "_evaluate_cell", lambda *a, **k: pytest.fail("a cell ran with a bad override"))
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^Unknown key 'dataset.image_size'.*Did you mean dataset.resize\?"):
        api.evaluate_images([image], corruption=["contrast"], severity=[1, 2], overrides=["dataset.image_size=64"])
    with pytest.raises(ValueError, match="severity=9"):
        api.evaluate_images([image], corruption="contrast", severity=9)


def test_the_api_composes_the_command_lines_config():
    cfg = compose_config(["attribution=saliency", "similarity.quality_map=drop", "severity=3"])
    assert cfg.attribution.name == "saliency" and cfg.similarity.quality_map == "drop" and cfg.severity == 3
    assert cfg.hydra.job.config_name == "evaluate"


@pytest.mark.slow
def test_own_models_and_several_cells_in_one_call(tmp_path, capfd):
    """A classifier and a quality model passed as modules give the numbers of the same models named in the config;
    lists of corruptions and severities give one DataFrame whose cells equal single-cell calls; figures come back as
    matplotlib figures and are written where asked; nothing on the console."""
    from matplotlib.figure import Figure
    from skimage import data

    from iqa_saliency.api import evaluate_images
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import load_paq2piq

    images, common = [data.chelsea(), data.coffee()], {"pretrained": False, "names": ["chelsea", "coffee"]}
    by_name = evaluate_images(images, corruption="contrast", severity=1, **common)
    net = load_classifier("resnet18", pretrained=False, seed=0).model.net  # what classifier=resnet18 builds
    quality, _ = load_paq2piq(pretrained=False, seed=0)  # what quality=paq2piq builds
    both = evaluate_images(images, corruption=["contrast"], severity=[1, 2], classifier=net, quality=quality,
                           figures=1, figures_dir=tmp_path / "figs", **common)
    assert set(both.cells) == {("contrast", 1), ("contrast", 2)} and len(both.rows) == 4
    assert sorted(set(zip(both.rows["corruption"], both.rows["severity"], strict=True))) == [("contrast", 1),
                                                                                            ("contrast", 2)]
    own = both.cells[("contrast", 1)]
    for column in ("pred", "pred_prob", "mos", "mos_clean", "sim_cc", "attr_stability_cc"):
        pd.testing.assert_series_equal(own.rows[column], by_name.rows[column], check_exact=False, rtol=1e-5,
                                       obj=column)
    assert own.summary["weights"]["classifier"]["name"] == "given:ResNet"
    assert len(own.summary["weights"]["classifier"]["sha256"]) == 64
    assert sorted(p.name for p in (tmp_path / "figs" / "contrast-s2").glob("*.png")) == ["000000_chelsea.png"]
    assert isinstance(own.figures["chelsea"], Figure) and list(own.figures) == ["chelsea"]
    out = capfd.readouterr()  # the file descriptors: Lightning's log handler holds the stderr of its import time
    assert "images" not in out.out + out.err and "severity" not in out.out  # no bar, no cell table
    assert "GPU available" not in out.err  # Lightning's device lines only with progress=True
