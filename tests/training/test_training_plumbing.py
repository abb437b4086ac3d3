"""What train.py logs, selects and records, recomputed from the files it leaves.

One short run in this process through the command line's code (`train` on the composed configuration, the CSV
logger): the split restated from its definition, each epoch's logged val loss and accuracies recomputed here from
the checkpoints' weights on the val images (prepared with PIL, normalised with ImageNet's mean/std, a torchvision
ResNet-18 built here), the best checkpoint being the epoch with the lowest logged val loss, and train_summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import plumbing_reference as pr
from helpers import reference as ref
from PIL import Image

CLASSES = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}
PER_CLASS, EPOCHS, RESIZE, CROP, BATCH, VAL_FRACTION, SEED = 5, 3, 36, 32, 5, 0.4, 3
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as torchvision documents them


def make_dataset(root: Path) -> Path:
    for c, (name, rgb) in enumerate(CLASSES.items()):
        for i in range(PER_CLASS):
            rng = np.random.default_rng(50 * c + i)
            img = np.array(rgb)[None, None] + rng.normal(0, 60, (40 + 4 * i, 44, 3))
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from iqa_saliency.cli.train import train

    tmp = tmp_path_factory.mktemp("train-plumbing")
    data, run = make_dataset(tmp / "data"), tmp / "run"
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="iqa_saliency.conf", version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            f"dataset.root={data}", "pretrained=false", "logger=csv", "trainer.enable_progress_bar=false",
            f"dataset.resize={RESIZE}", f"dataset.crop={CROP}", f"dataset.batch_size={BATCH}",
            "dataset.num_workers=0", f"dataset.val_fraction={VAL_FRACTION}", f"seed={SEED}", f"epochs={EPOCHS}",
            "optimizer.name=adamw", "optimizer.lr=0.003", "augment=false", "label_smoothing=0.2"])
    previous = HydraConfig.instance().cfg
    try:
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run)
        HydraConfig.instance().set_config(cfg)
        summary = train(cfg)
    finally:
        HydraConfig.instance().cfg = previous
    logged = [r for r in pr.read_csv(run / "csv" / "metrics.csv") if r.get("val/loss")]
    return {"data": data, "run": run, "summary": summary, "logged": logged}


def _listing(data: Path) -> tuple[list[str], list[pr.Listed], list[pr.Listed], list[pr.Listed]]:
    classes, listed = pr.list_class_folders(data)
    train_idx, val_idx = ref.stratified_split([(i.image_id, i.folder_label) for i in listed], VAL_FRACTION, SEED)
    return classes, listed, [listed[i] for i in train_idx], [listed[i] for i in val_idx]


def _evaluate(checkpoint: Path, val: list[pr.Listed]) -> dict[str, float]:
    """Val loss (mean cross-entropy over the images), top-1 and top-5 accuracy of a checkpoint's weights."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES))
    net.load_state_dict({k[len("classifier.net."):]: v for k, v in state.items() if k.startswith("classifier.net.")})
    net.eval()
    x = torch.stack([torch.from_numpy(pr.as_unit(pr.prepare(pr.decode(i.path), RESIZE, CROP))).permute(2, 0, 1)
                     for i in val]).float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    y = torch.tensor([i.folder_label for i in val])
    with torch.no_grad():
        logits = net(x).double()
    top = logits.argsort(dim=1, descending=True)
    return {"val/loss": float(F.cross_entropy(logits, y)), "val/acc_top1": float((top[:, 0] == y).double().mean()),
            "val/acc_top5": float((top[:, :5] == y[:, None]).any(dim=1).double().mean())}


def test_split_csv_is_the_stratified_split(trained):
    classes, listed, train, val = _listing(trained["data"])
    rows = pr.read_csv(trained["run"] / "split.csv")
    assert rows == ([{"image": i.image_id, "label": classes[i.folder_label], "split": "train"} for i in train]
                    + [{"image": i.image_id, "label": classes[i.folder_label], "split": "val"} for i in val])
    assert 0 < len(val) % BATCH  # the last val batch is short: a mean of batch means would differ


def test_each_epochs_logged_val_metrics_are_its_weights_on_the_val_images(trained):
    *_, val = _listing(trained["data"])
    logged = trained["logged"]
    assert [int(r["epoch"]) for r in logged] == list(range(EPOCHS))
    last = torch.load(trained["run"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["iqa_saliency"]["epoch"] == EPOCHS - 1
    want = _evaluate(trained["run"] / "checkpoints" / "last.ckpt", val)
    for key, value in want.items():
        assert float(logged[-1][key]) == pytest.approx(value, rel=1e-4, abs=1e-6), key
        assert last["iqa_saliency"]["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_the_best_checkpoint_is_the_epoch_with_the_lowest_val_loss(trained):
    *_, val = _listing(trained["data"])
    losses = [float(r["val/loss"]) for r in trained["logged"]]
    best_epoch = int(np.argmin(losses))
    best = torch.load(trained["run"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["iqa_saliency"]["epoch"] == best_epoch
    assert _evaluate(trained["run"] / "checkpoints" / "best.ckpt", val)["val/loss"] == pytest.approx(
        min(losses), rel=1e-4)
    summary = json.loads((trained["run"] / "train_summary.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(min(losses), rel=1e-6)
    assert Path(summary["best_checkpoint"]) == trained["run"] / "checkpoints" / "best.ckpt"


def test_train_summary_and_checkpoint_metadata(trained):
    classes, listed, train, val = _listing(trained["data"])
    summary = json.loads((trained["run"] / "train_summary.json").read_text())
    assert (summary["n_train"], summary["n_val"], summary["class_names"]) == (len(train), len(val), classes)
    assert summary["epochs_completed"] == EPOCHS
    assert Path(summary["last_checkpoint"]) == trained["run"] / "checkpoints" / "last.ckpt"
    selection = {"val_fraction": VAL_FRACTION, "split_seed": SEED, "split_method": "project", "quality_filter": None,
                 "quality_scorer": None, "quality_normalization": None}
    assert summary["meta"] == {"selection": selection, "image_size": {"resize": RESIZE, "crop": CROP},
                               "initial_weights": {"name": "untrained"}, "seed": SEED}
    meta = torch.load(trained["run"] / "checkpoints" / "best.ckpt", map_location="cpu",
                      weights_only=True)["iqa_saliency"]
    assert {k: meta[k] for k in ("selection", "image_size", "seed", "arch", "class_names", "normalize")} == {
        "selection": selection, "image_size": {"resize": RESIZE, "crop": CROP}, "seed": SEED, "arch": "resnet18",
        "class_names": classes, "normalize": True}
    final = summary["final_metrics"]
    for key in ("val/loss", "val/acc_top1", "val/acc_top5"):
        assert final[key] == pytest.approx(float(trained["logged"][-1][key]), rel=1e-6), key
