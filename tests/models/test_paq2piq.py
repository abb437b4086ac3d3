"""PaQ-2-PiQ: RoI layout, checkpoint formats, an independent forward pass, score normalisation."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import roi_pool

from iqa_saliency.errors import UserError, WeightsUnavailableError
from iqa_saliency.models.paq2piq import PaQ2PiQ, ScoreNormalizer, block_rois, load_paq2piq


def test_block_rois_order_matches_hand_computed_boxes():
    boxes = block_rois(40, 60)  # H=40, W=60: patches 3 wide, 2 high
    assert boxes.shape == (401, 4)
    assert boxes[0].tolist() == [0, 0, 60, 40]
    assert boxes[1].tolist() == [0, 0, 3, 2]      # row 0, col 0
    assert boxes[2].tolist() == [3, 0, 6, 2]      # x varies fastest
    assert boxes[20].tolist() == [57, 0, 60, 2]   # end of row 0
    assert boxes[21].tolist() == [0, 2, 3, 4]     # row 1, col 0
    assert boxes[400].tolist() == [57, 38, 60, 40]


def _random_model(seed: int = 1) -> PaQ2PiQ:
    torch.manual_seed(seed)
    model = PaQ2PiQ()
    for m in model.modules():  # non-trivial BN statistics so eval-mode BN matters
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A straightforward re-implementation: resnet18 body, per-image boxes, torchvision roi_pool, head."""
    body = torch.nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2])
    body.load_state_dict({k[len("body."):]: v for k, v in state.items() if k.startswith("body.")})
    body.eval()
    outputs = []
    with torch.no_grad():
        for img in x:
            h, w = img.shape[-2:]
            feats = body(img[None])
            boxes = [[0, 0, w, h]]
            ys = [h * i / 20 for i in range(21)]
            xs = [w * j / 20 for j in range(21)]
            for i in range(20):
                for j in range(20):
                    boxes.append([xs[j], ys[i], xs[j + 1], ys[i + 1]])
            pooled = roi_pool(feats, [torch.tensor(boxes, dtype=torch.float32)], (2, 2), 1 / 32)
            z = torch.cat([F.adaptive_max_pool2d(pooled, 1), F.adaptive_avg_pool2d(pooled, 1)], 1).flatten(1)
            z = F.batch_norm(z, state["head.2.running_mean"], state["head.2.running_var"],
                             state["head.2.weight"], state["head.2.bias"], False, 0.0, 1e-5)
            z = F.relu(F.linear(z, state["head.4.weight"], state["head.4.bias"]))
            z = F.batch_norm(z, state["head.6.running_mean"], state["head.6.running_var"],
                             state["head.6.weight"], state["head.6.bias"], False, 0.0, 1e-5)
            outputs.append(F.linear(z, state["head.8.weight"], state["head.8.bias"]).view(-1))
    return torch.stack(outputs)


@pytest.mark.parametrize("fast_pool", [False, True])
@pytest.mark.parametrize(("height", "width"), [(224, 224), (256, 341), (97, 131), (33, 32)])
def test_forward_matches_reference_at_many_sizes(fast_pool, height, width):
    """Eval mode scores each distinct set of pooled features once; every box must still get its own score."""
    model = _random_model(3)
    model.fast_pool = fast_pool
    torch.manual_seed(height)
    x = torch.rand(2, 3, height, width)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, reference_forward(model.state_dict(), x), atol=1e-5, rtol=1e-5)


def test_boxes_that_share_a_score_pool_the_same_bins():
    layout = _random_model().layout(224, 224, 7, 7)
    assert len(layout.unique_rows) == 198 and len(layout.inverse) == 401
    shared = layout.unique_rows[layout.inverse]
    assert torch.equal(layout.bins[shared], layout.bins)  # each box's representative has its exact bins
    assert shared[0] == 0 and torch.equal(layout.unique_rows, torch.sort(layout.unique_rows).values)
    # Hand check, row 0: grid column j spans [0.35 j, 0.35 (j + 1)] feature cells, rounded to [0, 0], [0, 1],
    # [1, 1], [1, 1], [1, 2] for j = 0..4, so only columns 2 and 3 (boxes 3 and 4) share a score.
    assert shared[1:6].tolist() == [1, 2, 3, 3, 5]


def test_shared_scores_equal_scoring_every_box():
    model = _random_model(5)
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        shared = model(x)
        model.share_scores = False
        plain = model(x)
    torch.testing.assert_close(shared, plain, rtol=1e-6, atol=1e-6)


def test_training_mode_scores_every_box_for_batchnorm():
    model = _random_model().train()
    x = torch.rand(2, 3, 64, 64)
    seen = []
    hook = model.head[2].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    model(x)
    hook.remove()
    assert seen == [2 * 401]


def test_bf16_autocast_on_cpu_pools_exactly_on_both_paths():
    model = _random_model(4)
    x = torch.rand(2, 3, 96, 96)
    outs = []
    for fast in (False, True, None):  # None: the default choice (the grid path under bf16 on a CPU)
        model.fast_pool = fast
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(model(x))
    assert outs[0].dtype == torch.bfloat16
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("fmt", ["official", "plain"])
def test_checkpoint_formats_load_and_match_reference(tmp_path, fmt):
    state = _random_model().state_dict()
    path = tmp_path / "paq.pth"
    torch.save({"model": state, "opt": None} if fmt == "official" else state, path)
    model, ident = load_paq2piq(checkpoint=str(path))
    assert ident.sha256 and len(ident.sha256) == 64 and ident.name != "untrained"
    torch.manual_seed(0)
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 401)
    torch.testing.assert_close(out, reference_forward(state, x), atol=1e-5, rtol=1e-5)
    g, local = model.split(out)
    assert torch.equal(g, out[:, 0]) and torch.equal(local[1, 2, 3], out[1, 1 + 2 * 20 + 3])


def test_wrong_architecture_checkpoint_names_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(UserError, match=r"missing .*quality\.checkpoint=PATH"):
        load_paq2piq(checkpoint=str(path))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(_random_model().state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="complete PyTorch checkpoint"):
        load_paq2piq(checkpoint=str(path))


def test_sha256_mismatch_is_refused(tmp_path):
    path = tmp_path / "paq.pth"
    torch.save(_random_model().state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="sha256"):
        load_paq2piq(checkpoint=str(path), sha256="0" * 64)


def test_offline_url_names_file_cache_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        load_paq2piq()
    msg = str(err.value)
    assert "RoIPoolModel-fit.10.bs.120.pth" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "quality.checkpoint=PATH" in msg
    assert not list((tmp_path / "torch" / "hub" / "checkpoints").iterdir())  # no partial file left


def test_url_weights_come_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"model": _random_model().state_dict()}, cache / "RoIPoolModel-fit.10.bs.120.pth")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    model, ident = load_paq2piq()
    assert ident.name == "paq2piq:OFFICIAL" and ident.source.startswith("https://")


def test_untrained_is_seeded_and_marked():
    a, ident = load_paq2piq(pretrained=False, seed=3)
    b, _ = load_paq2piq(pretrained=False, seed=3)
    assert ident.name == "untrained"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (72.0, 72.0),
        (65.0, 72 - 72 * 7 / (3.5 * 7.798274017370107)),   # 53.5343...
        (80.0, 72 + 28 * 8 / (3.5 * 4.118047289170692)),   # 87.5414...
        (200.0, 99.9),
        (-50.0, 0.0),
    ],
)
def test_score_normalisation_hand_values(raw, expected):
    got = ScoreNormalizer()(torch.tensor([raw], dtype=torch.float64)).item()
    assert got == pytest.approx(expected, abs=1e-9)
    assert 53.53 < 72 - 72 * 7 / (3.5 * 7.798274017370107) < 53.54


@pytest.mark.parametrize(
    ("score", "category"),
    [(0.0, "Bad"), (19.99, "Bad"), (20.0, "Poor"), (45.0, "Fair"), (72.0, "Good"), (80.0, "Excellent"),
     (99.9, "Excellent"), (math.nan, "")],
)
def test_categories(score, category):
    assert ScoreNormalizer.category(score) == category
