"""The project's study protocol (dataset=mit_indoor, classifier=study_resnet18) against the independent
restatement of the original study in tests/helpers/study_reference.py -- never against the project's own code."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import study_reference as ref
from PIL import Image

from iqa_saliency.attribution.registry import build_attribution, general_methods
from iqa_saliency.corruption import image_seed
from iqa_saliency.data.mit_indoor import MITIndoor
from iqa_saliency.data.pairs import CorruptedPairs
from iqa_saliency.data.protocol import Cell, Inputs
from iqa_saliency.data.quality_filter import fit_files, fit_normalizer, resolve_normalizer, scores_from_mos_csv
from iqa_saliency.data.selection import Selection, select_images
from iqa_saliency.data.splits import split_source
from iqa_saliency.errors import ConfigError, DatasetError, UserError
from iqa_saliency.models.classifier import load_classifier as project_load_classifier
from iqa_saliency.models.classifier import read_checkpoint_meta
from iqa_saliency.models.paq2piq import NORMALIZATIONS, ScoreNormalizer

pytest.importorskip("sklearn", reason="the study's split is sklearn's train_test_split")


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The study's layout: <root>/<class>/<file> and <root>/mos.csv (3 classes x 5 images)."""
    root = tmp_path_factory.mktemp("mit") / "mit-indoor-scenes"
    manifest = ref.make_study_dataset(root, classes=3, per_class=5, seed=1)
    return root, manifest


@pytest.fixture(scope="module")
def big_root(tmp_path_factory) -> Path:
    """3 classes x 12 images: enough Good/Excellent ones per class for a stratified split of what is kept."""
    root = tmp_path_factory.mktemp("mit-big") / "mit-indoor-scenes"
    ref.make_study_dataset(root, classes=3, per_class=12, seed=2)
    return root


def study_pairs(root: Path, corruption: str, severity: int, seed: int = 0) -> CorruptedPairs:
    return CorruptedPairs(MITIndoor(root, decode="imagefolder"), Cell(corruption, severity, seed),
                          Inputs(resize=None, crop=224, corrupt_at="full_size", small="pad"))


def as_study_tensor(chw_uint8: torch.Tensor) -> torch.Tensor:
    return chw_uint8.float().div(255)


# ---------------------------------------------------------------- transform


# the transform's order does not depend on the corruption: zoom_blur at full size (the slowest) runs in `make test`
@pytest.mark.parametrize("corruption,severity", [pytest.param("zoom_blur", 1, marks=pytest.mark.slow),
                                                 ("motion_blur", 2), ("contrast", 3)])
def test_corrupted_pairs_equal_the_study_transform(study_root, corruption, severity):
    """Every image (grey L, CMYK, palette P, one smaller than 224, RGB) clean and corrupted at full size, then
    cropped: bit-identical to the study's ToTensor -> NonRGB -> corrupt(uint8) -> CenterCrop(224)."""
    root, manifest = study_root
    pairs = study_pairs(root, corruption, severity, seed=5)
    samples = ref.study_samples(root)
    assert [Path(r.path) for r in pairs.source.records] == [Path(p) for p, _ in samples]
    modes = [m["mode"] for m in manifest]
    assert {"L", "CMYK", "P"} <= set(modes)
    for index, (path, _) in enumerate(samples):
        item = pairs[index]
        assert "error" not in item, item.get("error")
        image = Image.open(path)
        want_clean = ref.study_transform(image)
        seed = image_seed(5, item["image_id"], corruption, severity)
        want_corrupted = ref.study_transform(image, corruption, severity, seed=seed)
        assert torch.equal(as_study_tensor(item["clean"]), want_clean), (index, modes[index])
        assert torch.equal(as_study_tensor(item["corrupted"]), want_corrupted), (index, modes[index])


def test_image_smaller_than_the_crop_pads_like_the_study_or_upscales(study_root):
    """dataset.small=pad (mit_indoor's default): zero borders exactly as torchvision's CenterCrop; the project's
    default elsewhere (upscale) resizes the short side to 224 first and has no border."""
    root, manifest = study_root
    index = next(i for i, m in enumerate(manifest) if m["size"] == (197, 151))
    path = ref.study_samples(root)[index][0]
    padded = study_pairs(root, "zoom_blur", 1)[index]
    assert torch.equal(as_study_tensor(padded["corrupted"]),
                       ref.study_transform(Image.open(path), "zoom_blur", 1))
    assert padded["clean"][:, :36].sum() == 0 and padded["clean"][:, :, :13].sum() == 0  # (224-151)//2, (224-197)//2
    upscaled = CorruptedPairs(MITIndoor(root, decode="imagefolder"), Cell("zoom_blur", 1, 0),
                              Inputs(resize=None, crop=224, corrupt_at="full_size", small="upscale"))[index]
    assert upscaled["clean"].shape == (3, 224, 224) and upscaled["clean"][:, :36].float().mean() > 20


def test_cached_clean_image_still_corrupts_the_full_size_image(study_root):
    """Under full_size a clean-pass cache hit gives the clean crop, but the corrupted image must still come from
    the full-size decode (corrupting the cached crop would be the crop-first order). Contrast pulls towards the
    whole image's mean, so the crop-first order gives other pixels."""
    root, _ = study_root
    plain = study_pairs(root, "contrast", 2)
    cache: dict[str, dict] = {}
    for i in range(len(plain)):
        item = plain[i]
        cache[item["image_id"]] = {"image": item["clean"].permute(1, 2, 0).numpy().copy(), "q_global": np.zeros(1)}
    cached = study_pairs(root, "contrast", 2)
    cached.cached_clean = lambda image_id, stamp: dict(cache[image_id])
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert torch.equal(a["clean"], b["clean"]) and torch.equal(a["corrupted"], b["corrupted"])
        assert b["cached_clean"] is not None
    crop_first = CorruptedPairs(MITIndoor(root, decode="imagefolder"), Cell("contrast", 2, 0),
                                Inputs(resize=None, crop=224, corrupt_at="crop", small="pad"))
    assert not torch.equal(crop_first[0]["corrupted"], plain[0]["corrupted"])


def test_unknown_corrupt_at_is_a_config_error(study_root):
    with pytest.raises(ConfigError, match="dataset.corrupt_at=crop or full_size"):
        CorruptedPairs(MITIndoor(study_root[0]), Cell("zoom_blur", 1, 0), Inputs(corrupt_at="before"))


def test_official_layout_images_folder(tmp_path, study_root):
    root, _ = study_root
    shutil.copytree(root, tmp_path / "Images")
    (tmp_path / "Images" / "mos.csv").unlink()
    a, b = MITIndoor(root), MITIndoor(tmp_path)
    assert a.class_names == b.class_names and [r.image_id for r in a.records] == [r.image_id for r in b.records]


# ---------------------------------------------------------------- split and quality scores


@pytest.mark.parametrize("split", ["train", "val"])
def test_study_split_equals_sklearn_in_imagefolder_order(study_root, split):
    root, _ = study_root
    samples = ref.study_samples(root)
    train, val = ref.study_split([t for _, t in samples])
    want = [samples[i] for i in (train if split == "train" else val)]
    got = split_source(MITIndoor(root), split, 0.2, 32, method="study")
    assert [(Path(r.path), r.label) for r in got.records] == [(Path(p), t) for p, t in want]
    assert len(split_source(MITIndoor(root), "val", 0.2, 32, method="study")) == ref.study_validation_size(15)


@pytest.mark.parametrize("path_style", ["posix", "windows", "mixed"])
def test_mos_csv_rows_match_by_class_and_file(tmp_path, study_root, path_style):
    root, manifest = study_root
    ref.write_study_mos_csv(tmp_path, [(m["rel_path"], m["global_score"], m["normalized_global_score"], m["category"])
                                       for m in manifest], prefix="C:\\Users\\me\\datasets\\mit-indoor-scenes"
                            if path_style != "posix" else "datasets/mit-indoor-scenes", path_style=path_style)
    scores = scores_from_mos_csv(MITIndoor(root), tmp_path / "mos.csv")
    assert scores.category == [m["category"] for m in manifest]
    assert scores.mos == pytest.approx([m["global_score"] for m in manifest], rel=1e-6)


def test_missing_mos_row_is_a_one_line_error_naming_the_image(tmp_path, study_root):
    root, manifest = study_root
    ref.write_study_mos_csv(tmp_path, [(m["rel_path"], m["global_score"]) for m in manifest[1:]])
    selection = Selection(split="val", split_method="study", split_seed=32, quality_scores=str(tmp_path / "mos.csv"))
    with pytest.raises(DatasetError) as err:
        select_images(MITIndoor(root), selection)
    assert manifest[0]["rel_path"] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("as_run", [True, False])
def test_quality_filter_as_run_and_as_intended(big_root, as_run):
    """Default (no dataset.quality_filter): every image, as the study's code ran; quality_filter=[Good,Excellent]:
    what it intended. Either way the split is then drawn over what is kept."""
    root = big_root
    samples = ref.study_samples(root)
    rows = ref.read_study_mos_csv(root / "mos.csv")
    path_to_category = {p: rows[ref.study_mos_path(str(Path(p).relative_to(root)))] for p, _ in samples}
    kept = ref.study_quality_filter(samples, path_to_category, as_run=as_run)
    _, val = ref.study_split([t for _, t in kept])
    selection = Selection(split="val", split_method="study", split_seed=32, quality_scores=str(root / "mos.csv"),
                          quality_filter=None if as_run else ["Good", "Excellent"])
    got = select_images(MITIndoor(root), selection)
    assert [Path(r.path) for r in got.records] == [Path(kept[i][0]) for i in val]


# ---------------------------------------------------------------- normalisation


def test_normalizers_equal_the_study_formulas():
    raw = torch.tensor([30.0, 55.5, 70.0, 71.99, 72.0, 72.5, 75.0, 79.0, 90.0])
    got = ScoreNormalizer()(raw.double())
    assert got.tolist() == pytest.approx([ref.normalize(float(v)) for v in raw.double()], abs=1e-9)
    official = NORMALIZATIONS["official"](raw.double())
    p, sl, sr = 72.59696108881171, 7.798274017370107, 4.118047289170692  # baidut/paq2piq inference_model.py
    hand = [min(max(p + p * (x - p) / (4 * sl) if x < p else p + (100 - p) * (x - p) / (4 * sr), 0), 100)
            for x in raw.double().tolist()]
    assert official.tolist() == pytest.approx(hand, abs=1e-9)


def test_fit_equals_adapt_from_dir_by_hand():
    scores = [70.2, 70.9, 71.5, 72.3, 72.8, 72.1, 75.0, 68.0]
    fitted = ScoreNormalizer.fit(scores)
    assert fitted.peak == 72
    assert fitted.std_left == pytest.approx(math.sqrt((1.8**2 + 1.1**2 + 0.5**2 + 4.0**2) / 4), rel=1e-12)
    assert fitted.std_right == pytest.approx(math.sqrt((0.3**2 + 0.8**2 + 0.1**2 + 3.0**2) / 4), rel=1e-12)
    assert (fitted.peak, fitted.std_left, fitted.std_right) == pytest.approx(ref.fit_normalization(scores))
    assert ScoreNormalizer.fit([1.5, 2.5, 2.7, 1.2]).peak == 1  # a tie: the integer met first
    assert (fitted.n_std, fitted.clip_max) == (3.5, 99.9)


class MeanBrightness(torch.nn.Module):
    """A stand-in quality model: the global score is 100 x the mean pixel (any size)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (x.mean(dim=(1, 2, 3)) * 100)[:, None].repeat(1, 401)


def test_fit_dir_scores_full_size_in_rglob_order_and_caches(tmp_path):
    folder = tmp_path / "CLIVE" / "Images"
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a.JPG", "b.png", "sub/c.bmp", "sub/d.jpeg", "e.gif", "notes.txt"]):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            path.write_text("x")
            continue
        mode = "L" if i == 2 else "RGB"
        arr = rng.integers(150 + 3 * i, 200, size=(40 + i, 50, 3 if mode == "RGB" else 1), dtype=np.uint8)
        Image.fromarray(arr.squeeze(), mode).save(path, **({"quality": 95} if name.lower().endswith("jpg") else {}))
    files = fit_files(folder)
    want_files = [f for f in Path(folder).rglob("*.*") if f.name.lower().endswith((".jpg", ".jpeg", ".bmp", ".png"))]
    assert files == want_files and len(files) == 4
    model = MeanBrightness()
    by_hand = [float(np.asarray(ref.study_load_image(f), dtype=np.float32).mean() / 255 * 100) for f in files]
    fitted = fit_normalizer(folder, lambda: (model, None), tmp_path / "fit.json", "scorer")
    assert (fitted.peak, fitted.std_left, fitted.std_right) == pytest.approx(ref.fit_normalization(by_hand), rel=1e-5)
    assert fitted.name.startswith("fit:")
    calls = model.calls
    again = fit_normalizer(folder, lambda: (model, None), tmp_path / "fit.json", "scorer")
    assert model.calls == calls and again.std_left == fitted.std_left  # from the cache
    assert json.loads((tmp_path / "fit.json").read_text())


# ---------------------------------------------------------------- classifier


def test_study_checkpoint_loads_with_only_namespace_allow_listed(tmp_path):
    path = tmp_path / "best_model.ckpt"
    sd = ref.write_study_checkpoint(path, num_classes=5, seed=3)
    classifier = project_load_classifier(arch="study_resnet18", checkpoint=str(path), normalize=False)
    assert classifier.num_classes == 5 and classifier.extra["label_order"] == "folders"
    assert classifier.extra["study_args"]["batch_size"] == 32
    reference = ref.StudyResNet(5).eval()
    reference.load_state_dict(sd)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        got, want = classifier.model(x), reference(x)
        again = classifier.model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, again)  # no dropout in eval (the study's bug is not copied)
    assert read_checkpoint_meta(str(path)) is None  # no split metadata: the dataset's split is evaluated
    # ImageNet normalisation would change the input the study's network sees
    normalized = project_load_classifier(arch="study_resnet18", checkpoint=str(path), normalize=True)
    with torch.no_grad():
        assert not torch.allclose(normalized.model(x), want, atol=1e-3)
    # another global than argparse.Namespace is still refused, and named
    ckpt = ref.study_checkpoint_dict(5, 3)
    ckpt["hyper_parameters"]["extra"] = Path("x")
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="Unsupported global.*Path"):
        project_load_classifier(arch="study_resnet18", checkpoint=str(tmp_path / "other.ckpt"))
    with pytest.raises(ConfigError, match="classifier.checkpoint=PATH"):
        project_load_classifier(arch="study_resnet18", checkpoint=None)
    assert isinstance(torch.load(path, weights_only=False)["hyper_parameters"]["args"], argparse.Namespace)


@pytest.mark.parametrize("name", general_methods())
def test_every_attribution_method_works_on_the_study_classifier(tmp_path, name):
    path = tmp_path / "last.ckpt"
    ref.write_study_checkpoint(path, num_classes=4, seed=1)
    model = project_load_classifier(arch="study_resnet18", checkpoint=str(path), normalize=False).model
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    maps = build_attribution(name, model).attribute(x.clone().requires_grad_(True), target)
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
    assert (maps.flatten(1).std(dim=1) > 0).all()


def test_normalization_options(tmp_path):
    never = lambda: pytest.fail("the quality model is not needed")  # noqa: E731
    assert resolve_normalizer(None, never, "s") == ScoreNormalizer()
    assert resolve_normalizer({"name": "official"}, never, "s").n_std == 4.0
    with pytest.raises(ConfigError, match="fit_dir=PATH"):
        resolve_normalizer({"name": "fit"}, never, "s")
    with pytest.raises(ConfigError, match="quality.normalization.name='clive' is not valid"):
        resolve_normalizer({"name": "clive"}, never, "s")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 180 + 10 * i, np.uint8)).save(folder / f"{i}.png")
    fitted = resolve_normalizer({"fit_dir": str(folder), "cache": str(tmp_path / "c.json")},
                                lambda: (MeanBrightness(), None), "s")
    assert fitted.peak == 70 and fitted.name == f"fit:{folder}"
