"""The quality gate (data/quality_filter.py) against values known by construction: a stand-in quality model whose
global score is the image's mean pixel value, images held in memory, mos.csv text written here, the normaliser fit
restated with numpy, and the exact messages, log lines and file contents."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import reference as ref
from PIL import Image

from iqa_saliency.data import quality_filter as qf
from iqa_saliency.data.quality_filter import (
    QualityCache,
    QualityScores,
    ScoringOptions,
    category_counts,
    check_categories,
    file_key,
    filter_by_quality,
    fit_files,
    fit_normalizer,
    resolve_normalizer,
    score_source,
    scorer_id,
    scores_from_mos_csv,
    write_quality_report,
)
from iqa_saliency.data.sources import ImageFolder, ImageRecord, ImageSource
from iqa_saliency.errors import ConfigError, DatasetError
from iqa_saliency.models.paq2piq import NORMALIZATIONS, ScoreNormalizer
from iqa_saliency.models.weights import WeightsIdentity

HEADER = "image,size,mtime_ns,scorer,mos,mos_normalized,quality_category"
CATEGORY_NAMES = ["Bad", "Poor", "Fair", "Good", "Excellent"]
# 5x - 200 on both sides of 50, clipped to [0, 100]: exact in float32 for whole scores (44 -> 20, 52 -> 60, ...)
LINEAR = ScoreNormalizer(peak=50.0, std_left=10.0, std_right=10.0, n_std=1.0, clip_max=100.0, name="linear")


def linear(x: float) -> float:
    return float(min(max(5 * x - 200, 0.0), 100.0))


def category(n: float) -> str:
    return "" if np.isnan(n) else CATEGORY_NAMES[min(int(n // 20), 4)]


class MeanScore(torch.nn.Module):
    """Stands in for PaQ-2-PiQ: column 0 (the global score) is the image's mean pixel value (0-255) rounded, the
    other 400 columns 255 minus it. Records every call (shape, training mode, device, dtype, input) and where it
    was moved; raises KeyboardInterrupt on call `interrupt_at`."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.inputs: list[torch.Tensor] = []
        self.moved_to: list = []
        self.interrupt_at = interrupt_at

    def to(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.moved_to.append(args[0] if args else kwargs.get("device"))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), self.training, x.device, x.dtype))
        self.inputs.append(x.clone())
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        s = torch.full((len(x),), 50.0) if x.is_meta else (x.mean(dim=(1, 2, 3)) * 255).round()
        return torch.cat([s[:, None], (255 - s)[:, None].repeat(1, 400)], dim=1)


class Arrays(ImageSource):
    """Images held in memory (no files: a record's cache key is its id); None stands for an unreadable image.
    Leaves a mark in `mark` when it decodes in a DataLoader worker."""

    def __init__(self, images: dict[str, np.ndarray | None], mark: str | None = None) -> None:
        self.images = images
        self.records = [ImageRecord(k, i % 2) for i, k in enumerate(images)]
        self.class_names = ["a", "b"]
        self.mark = mark

    def load(self, record: ImageRecord) -> Image.Image:
        if self.mark and torch.utils.data.get_worker_info() is not None:
            open(self.mark, "a").close()
        pixels = self.images[record.image_id]
        if pixels is None:
            raise OSError(f"cannot decode {record.image_id}")
        return Image.fromarray(pixels)


def flat(value: int, h: int = 20, w: int = 30) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def loader(model: torch.nn.Module, calls: list | None = None):  # noqa: ANN201
    def load():  # noqa: ANN202
        if calls is not None:
            calls.append(1)
        return model, WeightsIdentity("stand-in")
    return load


def never():  # noqa: ANN201
    pytest.fail("the quality model must not be loaded")


def cache_row(image: str, scorer: str, mos: float, size: int = 0, mtime: int = 0) -> str:
    if np.isnan(mos):
        return f"{image},{size},{mtime},{scorer},,,"
    n = linear(mos)
    return f"{image},{size},{mtime},{scorer},{float(mos)!r},{n!r},{category(n)}"


@contextlib.contextmanager
def _recording_bar(log: list):  # noqa: ANN202
    class Bar:
        def update(self, n: int) -> None:
            log.append(("update", n))

    yield Bar()
    log.append(("close",))


# --- settings -------------------------------------------------------------------------------------------------


def test_categories_in_canonical_order_and_the_exact_refusals():
    assert check_categories(None) is None
    assert check_categories("good") == ["Good"]  # one name as a string, not its letters
    assert check_categories(("EXCELLENT", "bad", "Good", "good")) == ["Bad", "Good", "Excellent"]
    use = "Use names from ['Bad', 'Poor', 'Fair', 'Good', 'Excellent'], e.g. dataset.quality_filter=[Good,Excellent]."
    for names, unknown in ((["Good", "Great"], "category ['Great']"),
                           (["Great", "fine"], "categories ['Great', 'fine']"), ([], "categories []")):
        with pytest.raises(ConfigError, match=f"^{re.escape(f'Unknown quality {unknown}. {use}')}$"):
            check_categories(names)


def test_scorer_id_names_the_weights_and_the_preparation():
    assert scorer_id("/w/q.pth", True, 256, 224) == "/w/q.pth|resize=256|crop=224"
    assert scorer_id("/w/q.pth", False, None, 224) == "untrained|resize=None|crop=224"
    assert scorer_id(None, True, 300, None) == "None|resize=300|crop=None"


def test_file_key_is_the_resolved_path_size_and_mtime(tmp_path, monkeypatch):
    assert file_key(ImageRecord("c/x.png")) == ("c/x.png", 0, 0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.png").write_bytes(b"12345")
    os.utime(tmp_path / "c" / "x.png", ns=(10**18, 1234567890123456789))
    os.symlink(tmp_path / "c", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    want = (str(tmp_path.resolve() / "c" / "x.png"), 5, 1234567890123456789)
    assert file_key(ImageRecord("c/x.png", 0, "c/x.png")) == want
    assert file_key(ImageRecord("c/x.png", 0, "link/x.png")) == want


# --- the cache --------------------------------------------------------------------------------------------------


def test_cache_file_text_rows_sorted_nan_as_empty_and_read_back(tmp_path):
    path = tmp_path / "q.csv"
    cache = QualityCache(str(path))
    assert cache.rows == {}
    cache.put(("/d/b.png", 7, 9), "s2", np.float32(0.1), np.float64(0.5), "Bad")
    cache.put(("/d/b.png", 7, 9), "s1", 72, float("nan"), "")
    cache.put(("-a.png", 1, 2), "s1", float("nan"), 3.25, "Poor")
    cache.put(("/d/b.png", 8, 10), "s2", 80.0, 87.5, "Excellent")  # replaces the s2 row of the older version
    cache.save()
    assert path.read_bytes().decode() == "\n".join([
        HEADER,
        "'-a.png,1,2,s1,,3.25,Poor",  # a cell a spreadsheet would run is written with a quote
        "/d/b.png,7,9,s1,72.0,,",
        "/d/b.png,8,10,s2,80.0,87.5,Excellent", ""])
    again = QualityCache(path)
    assert again.get(("-a.png", 1, 2), "s1") == {"image": "-a.png", "size": "1", "mtime_ns": "2", "scorer": "s1",
                                                 "mos": "", "mos_normalized": "3.25", "quality_category": "Poor"}
    assert again.get(("/d/b.png", 8, 10), "s2")["mos"] == "80.0"
    assert again.get(("/d/b.png", 7, 9), "s1")["mos"] == "72.0"
    for key, scorer in (((("/d/b.png", 7, 9)), "s2"), (("/d/b.png", 8, 9), "s1"), (("/d/b.png", 7, 10), "s1"),
                        (("/d/b.png", 7, 9), "s3"), (("/d/c.png", 7, 9), "s1")):
        assert again.get(key, scorer) is None
    one = QualityCache(tmp_path / "one.csv")
    one.put(("x", 0, 0), "s", np.float32(0.1), np.float32(0.2), "Bad")
    one.save()
    assert (tmp_path / "one.csv").read_bytes().decode() == (
        f"{HEADER}\nx,0,0,s,0.10000000149011612,0.20000000298023224,Bad\n")


# --- what the model sees ------------------------------------------------------------------------------------------


def test_prepared_items_are_the_prepared_pixels_or_none_with_a_warning(caplog):
    noise = np.random.default_rng(0).integers(0, 256, (40, 44, 3), dtype=np.uint8)
    source = Arrays({"a/n.png": noise, "b/bad.png": None, "a/f.png": flat(9)})
    items = qf._Prepared(source, [2, 0, 1], None, 32)
    assert len(items) == 3
    index, x = items[1]
    assert index == 0 and x.dtype == torch.uint8
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), noise[4:36, 6:38])
    index, x = qf._Prepared(source, [0], None, None)[0]
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), noise)
    # resize before crop: 64 x 64 at 40 with a 32 x 32 centre at 200, resized to 32, is 1/4 * 200 + 3/4 * 40 = 80
    # on average (cropped at full size its centre would be 200 throughout)
    centre = flat(40, 64, 64)
    centre[16:48, 16:48] = 200
    _, x = qf._Prepared(Arrays({"a/c.png": centre}), [0], 32, 32)[0]
    assert x.shape == (3, 32, 32) and x.double().mean().item() == pytest.approx(80, abs=0.5)
    assert items[0][0] == 2
    with caplog.at_level(logging.WARNING, logger="iqa_saliency.data.quality_filter"):
        assert items[2] == (1, None)
    assert caplog.messages == ["Cannot score b/bad.png: cannot decode b/bad.png"]


def test_an_interrupt_hidden_in_a_decode_error_is_not_an_unreadable_image():
    class Interrupted(Arrays):
        def load(self, record):  # noqa: ANN001, ANN201
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise SystemError("decoder stopped") from exc

    with pytest.raises(KeyboardInterrupt):
        qf._Prepared(Interrupted({"a/x.png": flat(1)}), [0], None, None)[0]


# --- score_source -----------------------------------------------------------------------------------------------


def test_scores_are_column_0_normalised_categorised_and_cached(tmp_path, caplog, monkeypatch):
    values = [30, 44, 52, 60, 56, 48]
    source = Arrays({f"{'ab'[i % 2]}/v{v}.png": flat(v) for i, v in enumerate(values)} | {"b/zz.png": None})
    model = MeanScore()
    bar: list = []
    monkeypatch.setattr(qf, "progress_bar", lambda total, desc: (bar.append((total, desc)), _recording_bar(bar))[1])
    cache = tmp_path / "q.csv"
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.quality_filter"):
        scores = score_source(source, loader(model), cache, "s1", ScoringOptions(None, None, batch_size=4),
                              normalizer=LINEAR)
    assert caplog.messages == ["Scoring 7 images with PaQ-2-PiQ (0 cached)",
                               "Cannot score b/zz.png: cannot decode b/zz.png"]
    assert bar == [(7, "PaQ-2-PiQ scores"), ("update", 4), ("update", 3), ("close",)]
    # device None on a machine without CUDA: the CPU; the model in eval mode; pixels / 255 as float32
    assert model.moved_to == [torch.device("cpu")]
    assert [c[:4] for c in model.calls] == [((4, 3, 20, 30), False, torch.device("cpu"), torch.float32),
                                            ((2, 3, 20, 30), False, torch.device("cpu"), torch.float32)]
    torch.testing.assert_close(model.inputs[0][:, 0, 0, 0], torch.tensor([30, 44, 52, 60]) / 255.0, rtol=0, atol=0)
    want_mos = [float(v) for v in values] + [float("nan")]
    np.testing.assert_array_equal(scores.mos, want_mos)
    np.testing.assert_array_equal(scores.mos_normalized, [linear(v) for v in values] + [float("nan")])
    assert scores.category == ["Bad", "Poor", "Good", "Excellent", "Excellent", "Fair", ""]
    assert scores.n_scored == 7
    rows = sorted(cache_row(r.image_id, "s1", m) for r, m in zip(source.records, want_mos, strict=True))
    assert cache.read_bytes().decode() == "\n".join([HEADER, *rows, ""])

    # read back: nothing loaded, the unreadable one stays unscored, categories from the normaliser given now
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.quality_filter"):
        again = score_source(source, never, cache, "s1", normalizer=ScoreNormalizer())
    assert caplog.messages == []
    assert again.n_scored == 0
    np.testing.assert_array_equal(again.mos, want_mos)
    study = [ref.paq_normalise(v) for v in values]
    np.testing.assert_allclose(again.mos_normalized, study + [float("nan")], atol=1e-4)
    assert again.category == [ref.paq_category(n) for n in study] + [""]
    assert again.category == ["Bad", "Bad", "Bad", "Fair", "Poor", "Bad", ""]
    # another scorer scores everything again, beside the first scorer's rows
    assert score_source(source, loader(MeanScore()), cache, "s2", normalizer=LINEAR).n_scored == 7
    assert len(cache.read_text().splitlines()) == 1 + 14


def test_only_images_missing_from_the_cache_are_scored(tmp_path, caplog):
    cache = tmp_path / "q.csv"
    old = QualityCache(cache)
    old.put(("a/v44.png", 0, 0), "s", 44.0, 20.0, "Poor")
    old.put(("b/v60.png", 0, 0), "other", 60.0, 100.0, "Excellent")
    old.put(("b/v52.png", 5, 0), "s", 52.0, 60.0, "Good")  # another version of the file
    old.save()
    source = Arrays({"a/v44.png": flat(44), "b/v60.png": flat(60), "a/v52.png": flat(52), "b/v52.png": flat(52)})
    model = MeanScore()
    calls: list = []
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.quality_filter"):
        scores = score_source(source, loader(model, calls), cache, "s", ScoringOptions(None, None, device="cpu"),
                              LINEAR)
    assert caplog.messages == ["Scoring 3 images with PaQ-2-PiQ (1 cached)"]
    assert calls == [1] and [c[0] for c in model.calls] == [(3, 3, 20, 30)]
    assert scores.n_scored == 3 and scores.mos == [44.0, 60.0, 52.0, 52.0]
    assert scores.category == ["Poor", "Excellent", "Good", "Good"]
    assert cache.read_bytes().decode() == "\n".join([
        HEADER, cache_row("a/v44.png", "s", 44), cache_row("a/v52.png", "s", 52), cache_row("b/v52.png", "s", 52),
        cache_row("b/v60.png", "other", 60), cache_row("b/v60.png", "s", 60), ""])


def test_the_default_options_score_the_256_then_224_centre_in_batches_of_32(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    images = {f"a/{i:02d}.png": flat(40 + i % 30, 260, 300) for i in range(32)} | {"b/n.png": noise}
    model = MeanScore()
    scores = score_source(Arrays(images), loader(model), tmp_path / "q.csv", "s")
    assert [c[0] for c in model.calls] == [(32, 3, 224, 224), (1, 3, 224, 224)]
    assert model.moved_to == [torch.device("cpu")]
    np.testing.assert_array_equal((model.inputs[1][0] * 255).round().byte().permute(1, 2, 0).numpy(),
                                  noise[16:240, 16:240])
    # the study's normaliser by default
    assert scores.category[:32] == [ref.paq_category(ref.paq_normalise(40 + i % 30)) for i in range(32)]
    assert scores.mos_normalized[:32] == pytest.approx([ref.paq_normalise(40 + i % 30) for i in range(32)], abs=1e-4)


def test_full_size_scoring_groups_a_batch_by_shape(tmp_path):
    source = Arrays({"a/1.png": flat(44, 20, 30), "a/2.png": flat(48, 24, 30), "b/3.png": flat(52, 20, 30),
                     "b/4.png": flat(56, 24, 30), "b/5.png": flat(60, 30, 20)})
    model = MeanScore()
    scores = score_source(source, loader(model), tmp_path / "q.csv", "s", ScoringOptions(None, None, batch_size=8),
                          LINEAR)
    assert [c[0] for c in model.calls] == [(2, 3, 20, 30), (2, 3, 24, 30), (1, 3, 30, 20)]
    assert scores.mos == [44.0, 48.0, 52.0, 56.0, 60.0]
    assert scores.category == ["Poor", "Fair", "Good", "Excellent", "Excellent"]


def test_the_configured_device_and_cuda_when_none_is_configured(tmp_path, monkeypatch):
    # the meta device holds no data: the stand-in scores 50 for what it sees there
    source = Arrays({"a/1.png": flat(44), "a/2.png": flat(44, 24, 30)})
    model = MeanScore()
    meta = score_source(source, loader(model), tmp_path / "q.csv", "s", ScoringOptions(None, None, device="meta"),
                        LINEAR)
    assert model.moved_to == [torch.device("meta")] and [c[2] for c in model.calls] == [torch.device("meta")] * 2
    assert meta.mos == [50.0, 50.0]
    (tmp_path / "fit").mkdir()
    Image.fromarray(flat(44)).save(tmp_path / "fit" / "1.png")
    model = MeanScore()
    assert fit_normalizer(tmp_path / "fit", loader(model), None, "s", device="meta").peak == 50.0
    assert model.moved_to == [torch.device("meta")] and [c[2] for c in model.calls] == [torch.device("meta")]

    class Stop(Exception):
        pass

    class NoCuda(MeanScore):
        def to(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
            super().to(*args, **kwargs)
            raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for run in (lambda m: score_source(source, loader(m), tmp_path / "r.csv", "s", ScoringOptions(None, None)),
                lambda m: fit_normalizer(tmp_path / "fit", loader(m), None, "s")):
        model = NoCuda()
        with pytest.raises(Stop):
            run(model)
        assert model.moved_to == [torch.device("cuda")]


def test_the_configured_resize_comes_before_the_crop(tmp_path):
    # 64 x 64 at 40 with a 32 x 32 centre at 200: resized to 32 it averages 1/4 * 200 + 3/4 * 40 = 80, cropped at
    # full size it would be 200
    centre = flat(40, 64, 64)
    centre[16:48, 16:48] = 200
    scores = score_source(Arrays({"a/c.png": centre}), loader(MeanScore()), tmp_path / "q.csv", "s",
                          ScoringOptions(resize=32, crop=32), LINEAR)
    assert scores.mos == pytest.approx([80.0], abs=1)


def test_the_configured_workers_decode(tmp_path):
    mark = tmp_path / "in-a-worker"
    source = Arrays({"a/1.png": flat(44), "b/2.png": flat(60)}, mark=str(mark))
    scores = score_source(source, loader(MeanScore()), tmp_path / "q.csv", "s",
                          ScoringOptions(None, None, num_workers=1), LINEAR)
    assert scores.category == ["Poor", "Excellent"] and mark.exists()


def test_an_interrupted_run_keeps_the_batches_saved_every_save_every(tmp_path, monkeypatch):
    monkeypatch.setattr(qf, "SAVE_EVERY", 2)
    source = Arrays({f"a/{v}.png": flat(v) for v in (44, 48, 52, 56, 60)})
    cache = tmp_path / "q.csv"
    with pytest.raises(KeyboardInterrupt):
        score_source(source, loader(MeanScore(interrupt_at=4)), cache, "s", ScoringOptions(None, None, batch_size=1),
                     LINEAR)
    rows = [cache_row(f"a/{v}.png", "s", v) for v in (44, 48, 52, 56)]
    assert cache.read_bytes().decode() == "\n".join([HEADER, *rows[:2], ""])
    with pytest.raises(KeyboardInterrupt):
        score_source(source, loader(MeanScore(interrupt_at=3)), cache, "s", ScoringOptions(None, None, batch_size=1),
                     LINEAR)
    assert cache.read_bytes().decode() == "\n".join([HEADER, *rows, ""])


# --- the study's mos.csv ------------------------------------------------------------------------------------------


def test_the_studys_rows_by_class_and_file_and_a_missing_row_named(tmp_path):
    mos = tmp_path / "mos.csv"
    mos.write_text("image_path,global_score,normalized_global_score,category\n"
                   "C:\\study\\images\\a\\1.png,61.5,44.25,fair\n"
                   "images/b/2.png,80,95.5,Excellent\n"
                   "x/a/3.png,30.25,0,BAD\n")
    folder = tmp_path / "data"
    for name in ("a/1.png", "b/2.png", "a/3.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(flat(1)).save(folder / name)
    scores = scores_from_mos_csv(ImageFolder(folder), str(mos))
    assert scores == QualityScores([61.5, 30.25, 80.0], [44.25, 0.0, 95.5], ["Fair", "Bad", "Excellent"], 0)
    # a record without a path is matched by its id
    by_id = scores_from_mos_csv(Arrays({"b/2.png": flat(1), "a/1.png": None}), mos)
    assert by_id == QualityScores([80.0, 61.5], [95.5, 44.25], ["Excellent", "Fair"], 0)
    expected = (f"a/4.png has no row in {mos} (rows are matched by <class>/<file>). Use the mos.csv written for "
                "this dataset, or unset dataset.quality_scores.")
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        scores_from_mos_csv(Arrays({"a/1.png": None, "a/4.png": None}), mos)


# --- the normaliser fit -------------------------------------------------------------------------------------------


def fitted(scores: list[float]) -> tuple[float, float, float]:
    """adapt_from_dir restated: the most common whole part (the first met on a tie); each side's RMS from it."""
    whole = [int(s) for s in scores]
    counts = Counter(whole)
    peak = next(w for w in whole if counts[w] == max(counts.values()))
    x = np.array(scores)
    left, right = x[x < peak], x[x >= peak]
    return float(peak), float(np.sqrt(np.mean((left - peak) ** 2))), float(np.sqrt(np.mean((right - peak) ** 2)))


def _fit_folder(root) -> tuple[list, list[float]]:  # noqa: ANN001
    """Images in several modes, each of one colour so its score is known: (files in rglob order, scores)."""
    palette = Image.new("P", (6, 5), 0)
    palette.putpalette([90, 60, 66] + [0] * 765)  # palette index 0 is (90, 60, 66): mean 72
    made = {"b.png": Image.new("L", (30, 20), 70), "sub/c.JPEG": Image.new("RGB", (9, 8), (70, 70, 70)),
            "a.bmp": Image.new("RGB", (12, 10), (60, 66, 75)), "sub/d.PNG": Image.new("LA", (8, 8), (73, 0)),
            "p.png": palette, "notes.txt": None, "e.gif": Image.new("L", (4, 4)), "noext": None}
    for name, image in made.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if image is None:
            (root / name).write_text("x")
        else:
            image.save(root / name, **({"quality": 100} if name.endswith("JPEG") else {}))
    (root / "dir.jpg").mkdir()  # a folder with an image's name
    files = [f for f in root.rglob("*.*") if f.suffix.lower() in (".jpg", ".jpeg", ".bmp", ".png") and f.is_file()]
    scores = []
    for f in files:
        with Image.open(f) as im:
            scores.append(float(np.round(np.asarray(im.convert("RGB"), np.float32).mean())))
    return files, scores


def test_fit_files_are_rglobs_images_in_any_case(tmp_path):
    files, _ = _fit_folder(tmp_path)
    assert sorted(f.relative_to(tmp_path).as_posix() for f in files) == ["a.bmp", "b.png", "p.png", "sub/c.JPEG",
                                                                          "sub/d.PNG"]
    assert fit_files(str(tmp_path)) == files


def test_fit_scores_each_file_at_full_size_as_rgb_and_caches_the_parameters(tmp_path, caplog):
    folder = tmp_path / "imgs"
    files, scores = _fit_folder(folder)
    model = MeanScore()
    cache = tmp_path / "fit.json"
    cache.write_text('{"other": {"params": {}}}')
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.quality_filter"):
        norm = fit_normalizer(folder, loader(model), str(cache), "scorer-1", device="cpu")
    peak, left, right = fitted(scores)
    assert (norm.peak, norm.n_std, norm.clip_max, norm.name) == (peak, 3.5, 99.9, f"fit:{folder}")
    assert (norm.std_left, norm.std_right) == pytest.approx((left, right), rel=1e-12)
    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append((im.height, im.width))
    assert [c[:4] for c in model.calls] == [((1, 3, *hw), False, torch.device("cpu"), torch.float32) for hw in sizes]
    assert model.moved_to == [torch.device("cpu")]
    for f, x in zip(files, model.inputs, strict=True):
        with Image.open(f) as im:
            want = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32)).permute(2, 0, 1) / 255
        torch.testing.assert_close(x[0], want, rtol=0, atol=0)
    assert caplog.messages == [
        f"Fitting the score normalisation on 5 images of {folder}",
        f"Normalisation fitted on 5 images of {folder}: peak {peak}, std_left {left:.6f}, std_right {right:.6f}"]
    listing = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps(["scorer-1", listing]).encode()).hexdigest()[:20]
    params = {"peak": peak, "std_left": norm.std_left, "std_right": norm.std_right, "n_std": 3.5, "clip_max": 99.9}
    assert cache.read_bytes().decode() == json.dumps({"other": {"params": {}}, key: {
        "folder": str(folder), "n_images": 5, "scorer": "scorer-1", "params": params}}, indent=2) + "\n"

    # the cached parameters are used as they are written, without the model
    stored = json.loads(cache.read_text())
    stored[key]["params"] = {"peak": 70.0, "std_left": 1.5, "std_right": 2.25, "n_std": 4.0, "clip_max": 100.0}
    cache.write_text(json.dumps(stored))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iqa_saliency.data.quality_filter"):
        again = fit_normalizer(folder, never, cache, "scorer-1")
    assert again == ScoreNormalizer(70.0, 1.5, 2.25, 4.0, 100.0, f"fit:{folder}")
    assert caplog.messages == [f"Normalisation fitted on {folder} (cached in {cache}): peak 70.0, std_left 1.500000, "
                               "std_right 2.250000"]
    # another scorer, or a changed file, is fitted again
    other = MeanScore()
    fit_normalizer(folder, loader(other), cache, "scorer-2")
    assert len(other.calls) == 5
    os.utime(files[0], ns=(0, files[0].stat().st_mtime_ns + 10**9))
    changed = MeanScore()
    assert fit_normalizer(folder, loader(changed), cache, "scorer-1").peak == peak
    assert len(changed.calls) == 5 and len(json.loads(cache.read_text())) == 4


def test_fit_without_a_cache_file_and_from_a_home_relative_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "imgs").mkdir()
    for i, v in enumerate((70, 70, 66, 75, 71)):
        Image.fromarray(flat(v)).save(tmp_path / "imgs" / f"{i}.png")
    model = MeanScore()
    norm = fit_normalizer("~/imgs", loader(model), None, "s")
    assert norm.name == f"fit:{tmp_path / 'imgs'}" and norm.peak == 70.0
    assert (norm.std_left, norm.std_right) == pytest.approx((4.0, np.sqrt((0 + 0 + 25 + 1) / 4)), rel=1e-12)
    assert list(tmp_path.glob("*.json")) == [] and len(model.calls) == 5
    # the fitted parameters in numbers that need no fit: one side empty is NaN, written as null
    one = MeanScore()
    (tmp_path / "one").mkdir()
    Image.fromarray(flat(70)).save(tmp_path / "one" / "x.png")
    single = fit_normalizer(tmp_path / "one", loader(one), tmp_path / "c.json", "s")
    assert single.peak == 70.0 and np.isnan(single.std_left) and single.std_right == 0.0
    assert '"std_left": null' in (tmp_path / "c.json").read_text()


def test_fit_refuses_a_missing_or_empty_folder_in_one_line(tmp_path):
    (tmp_path / "f.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    for folder, why in ((tmp_path / "nope", "is not a folder. Set it to a folder of images (the study used CLIVE's "
                                            "Images/)."),
                        (tmp_path / "f.png", "is not a folder. Set it to a folder of images (the study used CLIVE's "
                                             "Images/)."),
                        (tmp_path / "empty", "holds no .jpg/.jpeg/.bmp/.png files.")):
        with pytest.raises(ConfigError, match=f"^{re.escape(f'quality.normalization.fit_dir={str(folder)!r} {why}')}$"):
            fit_normalizer(folder, never, tmp_path / "c.json", "s")


def test_normalisation_options_name_the_normaliser_or_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_normalizer(None, never, "s") is NORMALIZATIONS["study_defaults"]
    assert resolve_normalizer({}, never, "s") is NORMALIZATIONS["study_defaults"]
    assert resolve_normalizer({"name": None, "fit_dir": ""}, never, "s") is NORMALIZATIONS["study_defaults"]
    assert resolve_normalizer({"name": "official"}, never, "s") is NORMALIZATIONS["official"]
    for options, message in (
            ({"name": "clive"}, "quality.normalization.name='clive' is not valid. Use one of: study_defaults, fit, "
                                "official."),
            ({"name": "official", "fit_dir": "x"}, "quality.normalization.fit_dir is set but name=official. Set "
                                                   "quality.normalization.name=fit (or drop fit_dir)."),
            ({"name": "fit"}, "quality.normalization.name=fit needs a folder. Set quality.normalization.fit_dir=PATH "
                              "(the study fitted on CLIVE's Images/).")):
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            resolve_normalizer(options, never, "s")
    (tmp_path / "imgs").mkdir()
    for i, v in enumerate((70, 66, 75)):
        Image.fromarray(flat(v)).save(tmp_path / "imgs" / f"{i}.png")
    model = MeanScore()
    options = {"fit_dir": str(tmp_path / "imgs"), "cache": str(tmp_path / "c.json")}
    norm = resolve_normalizer(options, loader(model), "scorer-9", device="cpu:0")
    assert options == {"fit_dir": str(tmp_path / "imgs"), "cache": str(tmp_path / "c.json")}
    assert (norm.peak, norm.std_left, norm.name) == (70.0, 4.0, f"fit:{tmp_path / 'imgs'}")
    assert norm.std_right == np.sqrt(12.5)
    assert model.moved_to == [torch.device("cpu", 0)]
    (entry,) = json.loads((tmp_path / "c.json").read_text()).values()
    assert entry["scorer"] == "scorer-9"
    named = resolve_normalizer({"name": "fit", **options}, never, "scorer-9")
    assert named == norm


# --- counts, the kept images and the report -----------------------------------------------------------------------


def test_counts_keep_and_the_report_files(tmp_path, monkeypatch):
    records = [ImageRecord("a/1.png", 0), ImageRecord("b/2.png", 1), ImageRecord("a/3.png", 0),
               ImageRecord("b/4.png", 1), ImageRecord("a/5.png", 0)]
    scores = QualityScores([61.5, float("nan"), 80.0, 0.1, 72.0], [44.25, float("nan"), 95.5, 0.0, 72.0],
                           ["Fair", "", "Excellent", "Bad", "Good"], 3)
    counts = category_counts(scores)
    assert list(counts.items()) == [("Bad", 1), ("Poor", 0), ("Fair", 1), ("Good", 1), ("Excellent", 1),
                                    ("unreadable", 1)]
    assert list(category_counts(QualityScores([], [], ["Good", "Good"], 0)).items()) == [
        ("Bad", 0), ("Poor", 0), ("Fair", 0), ("Good", 2), ("Excellent", 0)]
    source = Arrays({r.image_id: None for r in records})
    kept = filter_by_quality(source, scores, ("Good", "Fair"))
    assert [r.image_id for r in kept.records] == ["a/1.png", "a/5.png"] and kept.base is source

    import matplotlib
    import matplotlib.pyplot as plt

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig))[1])
    with matplotlib.rc_context({"savefig.format": "svg"}):  # a user's matplotlibrc does not change the format
        write_quality_report(tmp_path, counts, ("Good", "Fair"), 2, scores, records)
    assert (tmp_path / "quality_filter.json").read_bytes().decode() == json.dumps({
        "counts": {"Bad": 1, "Poor": 0, "Fair": 1, "Good": 1, "Excellent": 1, "unreadable": 1},
        "keep": ["Good", "Fair"], "n_total": 5, "n_kept": 2, "n_scored_now": 3}, indent=2) + "\n"
    assert (tmp_path / "quality_scores.csv").read_bytes().decode() == (
        "image,label,mos,mos_normalized,quality_category,kept\n"
        "a/1.png,0,61.5,44.25,Fair,1\n"
        "b/2.png,1,,,,0\n"
        "a/3.png,0,80.0,95.5,Excellent,0\n"
        "b/4.png,1,0.1,0.0,Bad,0\n"
        "a/5.png,0,72.0,72.0,Good,1\n")
    # the histogram: one bar per count, green where kept, labelled with its count
    (fig,) = figures
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(counts)
    assert [p.get_height() for p in ax.patches] == [1, 0, 1, 1, 1, 1]
    green, gray = (0.17254901960784313, 0.6274509803921569, 0.17254901960784313, 1.0), (
        0.4980392156862745, 0.4980392156862745, 0.4980392156862745, 1.0)
    assert [p.get_facecolor() for p in ax.patches] == [gray, gray, green, green, gray, gray]
    assert [t.get_text() for t in ax.texts] == ["1", "0", "1", "1", "1", "1"]
    assert ax.get_ylabel() == "images"
    assert ax.get_title() == "PaQ-2-PiQ categories (green: kept, 2 of 5)"
    with Image.open(tmp_path / "quality_categories.png") as png:
        assert png.size == (720, 420) and png.format == "PNG"
    assert ax.get_position().x0 != pytest.approx(0.125)  # tight layout, not matplotlib's default margins


def test_a_model_or_a_report_with_a_row_too_few_fails_instead_of_dropping_images(tmp_path):
    class OneShort(MeanScore):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)[:-1]

    source = Arrays({"a/1.png": flat(44), "b/2.png": flat(60)})
    with pytest.raises(ValueError, match="zip"):
        score_source(source, loader(OneShort()), tmp_path / "q.csv", "s", ScoringOptions(None, None), LINEAR)
    scores = QualityScores([44.0], [20.0], ["Poor"], 1)
    with pytest.raises(ValueError, match="zip"):
        write_quality_report(tmp_path, category_counts(scores), ["Poor"], 1, scores, source.records)


def test_a_file_name_with_line_breaks_reads_back_as_it_was_written(tmp_path):
    cache = QualityCache(tmp_path / "q.csv")
    for name in ("a/x\ry.png", "a/x\ny.png", "a/x\r\ny.png"):
        cache.put((name, 1, 2), "s", 44.0, 20.0, "Poor")
    cache.save()
    again = QualityCache(tmp_path / "q.csv")
    assert sorted(again.rows) == [("a/x\ny.png", "s"), ("a/x\r\ny.png", "s"), ("a/x\ry.png", "s")]
    assert again.get(("a/x\ry.png", 1, 2), "s")["quality_category"] == "Poor"
