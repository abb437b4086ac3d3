"""Every speed-up against its plain path: grid RoI pooling, corruption cache, clean-pass cache."""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.cli import run_cli
from helpers.images import make_image
from torchvision.ops import roi_pool

from iqa_saliency.caches import corruption as corruption_cache
from iqa_saliency.caches.corruption import CachedCorruption
from iqa_saliency.corruption import apply_corruption
from iqa_saliency.models.paq2piq import GridRoIPool, PaQ2PiQ, block_rois, roipool_bins


@pytest.mark.parametrize(("height", "width"), [(224, 224), (256, 341), (512, 512), (1024, 1024), (97, 131),
                                                (600, 400), (33, 32)])
def test_grid_pool_equals_torchvision_roi_pool(height, width):
    fh, fw = -(-height // 32), -(-width // 32)  # ResNet18's stride-32 feature map size
    feats = torch.randn(3, 16, fh, fw, generator=torch.Generator().manual_seed(height + width))
    boxes = block_rois(height, width)
    index = torch.arange(3, dtype=torch.float32).repeat_interleave(len(boxes))[:, None]
    ref = roi_pool(feats, torch.cat([index, boxes.repeat(3, 1)], 1), (2, 2), 1 / 32)
    got = GridRoIPool(roipool_bins(boxes, fh, fw, 1 / 32))(feats)
    assert torch.equal(got, ref)


def test_model_fast_pool_equals_roi_pool_path():
    torch.manual_seed(0)
    fast = PaQ2PiQ(fast_pool=True).eval()
    plain = PaQ2PiQ(fast_pool=False).eval()
    plain.load_state_dict(fast.state_dict())
    x = torch.rand(2, 3, 160, 224)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_concat_pool_equals_the_adaptive_pooling_layers(dtype):
    from iqa_saliency.models.paq2piq import AdaptiveConcatPool2d

    x = torch.randn(50, 16, 2, 2, generator=torch.Generator().manual_seed(0)).to(dtype)
    want = torch.cat([torch.nn.AdaptiveMaxPool2d(1)(x), torch.nn.AdaptiveAvgPool2d(1)(x)], 1)
    got = AdaptiveConcatPool2d()(x)
    assert got.shape == want.shape == (50, 32, 1, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=0 if dtype == torch.float32 else 1e-2)
    odd = torch.randn(3, 4, 5, 7)
    assert torch.equal(AdaptiveConcatPool2d()(odd)[:, :4], odd.amax(dim=(2, 3), keepdim=True))


def test_corruption_cache_returns_backend_result_and_skips_work(tmp_path, monkeypatch):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cached = CachedCorruption(tmp_path)
    first = cached(image, "gaussian_noise", 3, seed=7)
    np.testing.assert_array_equal(first, apply_corruption(image, "gaussian_noise", 3, seed=7))
    monkeypatch.setattr(corruption_cache, "apply_corruption", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_array_equal(cached(image, "gaussian_noise", 3, seed=7), first)
    assert cached.path(image, "gaussian_noise", 3, 7) != cached.path(image, "gaussian_noise", 3, 8)
    assert cached.path(image, "gaussian_noise", 3, 7) != cached.path(image[::-1].copy(), "gaussian_noise", 3, 7)
    assert cached(image, "contrast", 0, seed=1) is image


@pytest.mark.slow
def test_sweep_with_caches_equals_plain_runs(tmp_path):
    common = ["-m", "corruption=contrast,gaussian_noise", "severity=0,2", "pretrained=false", "logger=none",
              "dataset.source.names=[chelsea,rocket]", "figures=0", "trainer.enable_progress_bar=false"]
    plain, cached = tmp_path / "plain", tmp_path / "cached"
    for out, extra in ((plain, ["clean_cache=null"]), (cached, [f"corruption_cache={tmp_path / 'cc'}"])):
        proc = run_cli("evaluate.py", *common, *extra, f"hydra.sweep.dir={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent.name for p in plain.glob("*/per_image.csv"))
    assert len(runs) == 4
    for name in runs:
        a = pd.read_csv(plain / name / "per_image.csv")
        b = pd.read_csv(cached / name / "per_image.csv")
        assert list(a.columns) == list(b.columns)
        for col in a.columns:
            if a[col].dtype.kind == "f":
                np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-5, err_msg=f"{name}:{col}")
            else:
                assert a[col].equals(b[col]), f"{name}:{col}"


@pytest.mark.parametrize("method", ["gradcam", "layer_cam", "gradcam_plus_plus"])
def test_one_pass_prediction_and_map_equal_the_two_pass_path(method):
    from iqa_saliency.attribution.registry import build_attribution
    from iqa_saliency.models.classifier import load_classifier

    model = load_classifier(pretrained=False, seed=2).model
    torch.manual_seed(1)
    x = torch.rand(3, 3, 96, 96)
    explainer = build_attribution(method, model)
    logits, maps = explainer.predict_and_attribute(x)
    with torch.no_grad():
        plain_logits = model(x)
    torch.testing.assert_close(logits, plain_logits)
    plain_maps = explainer.attribute(x.clone().requires_grad_(True), target=plain_logits.argmax(1))
    torch.testing.assert_close(maps, plain_maps, rtol=1e-5, atol=1e-6)
    labels = torch.tensor([5, 0, 9])
    _, by_label = explainer.predict_and_attribute(x, labels)
    torch.testing.assert_close(by_label, explainer.attribute(x.clone(), target=labels), rtol=1e-5, atol=1e-6)


def _evaluate_cell(run_dir, names, clean_cache_dir, workers, source=None, fold_batchnorm=False):
    """One cell in process; unfolded unless asked (folding is checked on its own below, and copying and fusing
    both models would be a third of each cell's time)."""
    import pytorch_lightning as pl

    from iqa_saliency.data.protocol import Cell, Inputs
    from iqa_saliency.data.sources import SampleImages
    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation, Outputs, Speed
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import load_paq2piq

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False,
                         use_distributed_sampler=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    quality, quality_weights = load_paq2piq(pretrained=False)
    models = EvaluationModels(quality, quality_weights, load_classifier(pretrained=False))
    summary = run_evaluation(
        source or SampleImages(names), models, trainer, Cell("contrast", 2, seed=0),
        Inputs(resize=80, crop=64, batch_size=3, num_workers=workers), Explanation("gradcam"),
        Outputs(run_dir, figures=0, clean_cache_dir=clean_cache_dir), Speed(fold_batchnorm=fold_batchnorm),
    ).summary
    # a sweep runs its cells in one process: each run's writer threads must end with the run
    assert [t.name for t in threading.enumerate() if t.name.startswith("run-writer")] == []
    return pd.read_csv(run_dir / "per_image.csv"), summary


def _assert_same_rows(got, plain):
    for col in plain.columns:
        if plain[col].dtype.kind == "f":
            # Batches differ in size between the runs (float noise ~1e-7); Spearman's ranks of near-tied
            # Grad-CAM pixels can swap on such noise, so it gets a looser bound; so do the change maps' measures,
            # whose |clean - corrupted| differences carry the noise of both maps at a smaller scale (how far depends
            # on the CPU's float kernels: folding moved change_spearman by 2.1e-3 on a 2-core AMD EPYC).
            atol = 5e-3 if col == "change_spearman" else 1e-3 if col in ("sim_spearman", "change_cc") else 1e-5
            np.testing.assert_allclose(got[col], plain[col], rtol=1e-5, atol=atol, err_msg=col)
        elif col != "maps":
            assert got[col].equals(plain[col]), col


# the cache read in DataLoader workers: the same code as with workers=0, behind a process start per cell (slow)
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_partly_cached_clean_pass_equals_computing_it(tmp_path, workers):
    """The cache serves a batch only when it holds all of it (read in the workers or not); a batch it holds in
    part is computed whole, as without a cache: the rows equal the plain run's exactly, as a model's float
    results depend on the batch they ran in. Each cell also checks that its writer threads ended with it."""
    names = ["chelsea", "coffee", "rocket", "clock", "camera"]  # batches of 3: [chelsea coffee rocket] [clock camera]
    plain, _ = _evaluate_cell(tmp_path / "plain", names, None, workers)
    cache = tmp_path / "cache"
    _evaluate_cell(tmp_path / "fill", ["coffee", "clock"], cache, workers)  # one image of each batch cached
    mixed, summary = _evaluate_cell(tmp_path / "mixed", names, cache, workers)
    assert (summary["clean_cache"]["hits"], summary["clean_cache"]["misses"]) == (0, 5)
    pd.testing.assert_frame_equal(mixed, plain)
    _evaluate_cell(tmp_path / "fill2", names[:3], tmp_path / "cache2", workers)  # the first batch, as batched
    served, summary = _evaluate_cell(tmp_path / "served", names, tmp_path / "cache2", workers)
    assert (summary["clean_cache"]["hits"], summary["clean_cache"]["misses"]) == (3, 2)
    pd.testing.assert_frame_equal(served, plain)


def test_cached_clean_image_is_not_decoded_again_and_a_replaced_file_is(tmp_path):
    """A warm clean cache serves the prepared image too (no decoding), unless the file has changed since."""
    from iqa_saliency.data.sources import ImageFolder

    class CountingFolder(ImageFolder):
        def __init__(self, root):
            super().__init__(root)
            self.decoded = []

        def load_reduced(self, record, min_side):
            self.decoded.append(record.image_id)
            return super().load_reduced(record, min_side)

    images = tmp_path / "images"
    for k in range(4):
        make_image(images / f"im{k}.png", size=(90, 70), seed=k)
    cache = tmp_path / "cache"
    first = CountingFolder(images)
    _evaluate_cell(tmp_path / "fill", None, cache, 0, source=first)
    assert sorted(first.decoded) == ["im0.png", "im1.png", "im2.png", "im3.png"]

    warm = CountingFolder(images)
    rows, summary = _evaluate_cell(tmp_path / "warm", None, cache, 0, source=warm)
    assert warm.decoded == [] and summary["clean_cache"]["hits"] == 4
    _assert_same_rows(rows, _evaluate_cell(tmp_path / "plain", None, None, 0, source=ImageFolder(images))[0])

    replaced = make_image(images / "im2.png", size=(90, 70), seed=99)  # another picture under the same name
    stat = replaced.stat()  # a later mtime, as a real edit has (a coarse-clock filesystem might not tick here)
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = CountingFolder(images)
    rows, summary = _evaluate_cell(tmp_path / "changed", None, cache, 0, source=changed)
    assert changed.decoded == ["im2.png"]  # the other images' prepared pixels still come from the cache
    # the cache serves whole fixed batches only (batch_size 3: [im0 im1 im2] [im3]), so the batch holding the
    # replaced file recomputes its clean outputs (3 misses) and the other batch is served (1 hit)
    assert (summary["clean_cache"]["hits"], summary["clean_cache"]["misses"]) == (1, 3)
    _assert_same_rows(rows, _evaluate_cell(tmp_path / "plain2", None, None, 0, source=ImageFolder(images))[0])


def _randomise_batchnorm(model, seed=0):
    """Non-trivial running statistics and affine parameters (untrained ones would make folding a no-op)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def test_folded_classifier_gives_captums_gradcam_of_the_unfolded_one():
    from captum.attr import LayerAttribution, LayerGradCam

    from iqa_saliency.attribution.registry import build_attribution
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.folding import fold_batchnorm

    model = _randomise_batchnorm(load_classifier(pretrained=False, seed=3).model)
    folded = fold_batchnorm(model)
    assert folded is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 20  # the original is untouched
    x = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_logits = model(x)
    logits, maps = build_attribution("gradcam", folded).predict_and_attribute(x)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
    cam = LayerGradCam(model, model.net.layer4).attribute(x, target=want_logits.argmax(1), relu_attributions=True)
    want = LayerAttribution.interpolate(cam, (96, 96), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(maps, want, rtol=1e-4, atol=1e-5 * float(want.detach().abs().max()))


def test_folded_quality_model_scores_like_the_unfolded_one():
    from iqa_saliency.models.folding import fold_batchnorm

    model = _randomise_batchnorm(PaQ2PiQ())
    x = torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-5)


def test_folding_is_refused_when_a_block_uses_its_batchnorm_elsewhere(caplog):
    from iqa_saliency.models.folding import fold_batchnorm

    class SkipsItsConv(torch.nn.Module):  # named like a torchvision block, but bn1 normalises the input
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv1(x) + self.bn1(x)

    model = _randomise_batchnorm(SkipsItsConv())
    assert fold_batchnorm(model) is model
    assert "changed its outputs" in caplog.text


def test_a_map_over_a_folded_convolution_keeps_the_model_unfolded():
    from iqa_saliency.attribution.registry import build_attribution
    from iqa_saliency.evaluation.module import _with_explainer
    from iqa_saliency.models.classifier import load_classifier

    model = load_classifier(pretrained=False).model
    run, explainer = _with_explainer(model, lambda m: build_attribution("gradcam", m, layer="net.layer4.1.conv2"),
                                     fold=True)
    assert run is model and explainer.layer is model.net.layer4[1].conv2  # pre-BatchNorm activations, as asked
    run, explainer = _with_explainer(model, lambda m: build_attribution("gradcam", m), fold=True)
    assert run is not model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in run.modules())


def test_pipeline_rows_with_and_without_folding_agree(tmp_path):
    names = ["chelsea", "coffee", "rocket"]
    plain, _ = _evaluate_cell(tmp_path / "plain", names, None, 0)
    folded, _ = _evaluate_cell(tmp_path / "folded", names, None, 0, fold_batchnorm=True)
    _assert_same_rows(folded, plain)


@pytest.mark.parametrize("severity", [2, 0])
def test_quality_attribution_is_captums_gradcam_of_the_images_compared(tmp_path, severity):
    """The quality model's map (similarity.quality_saliency) explains the corrupted image, or the clean one in a
    clean cell whose clean pass comes from the cache; checked against captum on the unfolded model."""
    import pytorch_lightning as pl
    from captum.attr import LayerAttribution, LayerGradCam

    from iqa_saliency.corruption import image_seed
    from iqa_saliency.data.images import prepare_image
    from iqa_saliency.data.protocol import Cell, Inputs
    from iqa_saliency.data.sources import SampleImages
    from iqa_saliency.evaluation.cell import run_evaluation
    from iqa_saliency.evaluation.settings import EvaluationModels, Explanation, Outputs
    from iqa_saliency.models.classifier import load_classifier
    from iqa_saliency.models.paq2piq import GlobalScore

    names = ["chelsea", "coffee"]
    quality = _randomise_batchnorm(PaQ2PiQ())
    cache = tmp_path / "cache"

    def run(name, sev):
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False,
                             use_distributed_sampler=False, enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=False)
        models = EvaluationModels(quality, _untrained_identity(), load_classifier(pretrained=False))
        run_evaluation(SampleImages(names), models, trainer, Cell("contrast", sev, seed=0),
                       Inputs(resize=80, crop=64, batch_size=2, num_workers=0),
                       Explanation("gradcam", quality_saliency="gradcam"),
                       Outputs(tmp_path / name, figures=0, clean_cache_dir=cache))
        return pd.read_csv(tmp_path / name / "per_image.csv")

    run("fill", 3)  # the clean pass of both images is cached
    rows = run("cell", severity)
    source = SampleImages(names)
    score = GlobalScore(quality)
    for record, (_, row) in zip(source.records, rows.iterrows(), strict=True):
        clean = np.array(prepare_image(source.load(record), 80, 64))
        seed = image_seed(0, record.image_id, "contrast", severity)
        image = clean if severity == 0 else apply_corruption(clean, "contrast", severity, seed)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        cam = LayerGradCam(score, quality.body[7]).attribute(x, target=0, relu_attributions=True)
        want = LayerAttribution.interpolate(cam, (64, 64), interpolate_mode="bilinear")[0, 0].detach().numpy()
        got = np.load(tmp_path / "cell" / row["maps"])["quality_attribution"]
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def _untrained_identity():
    from iqa_saliency.models.paq2piq import load_paq2piq

    return load_paq2piq(pretrained=False)[1]


def test_heap_settings_are_taken_by_glibc_and_skipped_elsewhere(monkeypatch):
    import platform

    from iqa_saliency import heap

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert heap.reuse_freed_heap() is True
    heap._libc.cache_clear()
    monkeypatch.setattr(heap.ctypes.util, "find_library", lambda name: None)
    assert heap.reuse_freed_heap() is False
    heap.release_free_heap()  # a no-op without glibc
    heap._libc.cache_clear()
