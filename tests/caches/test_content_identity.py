"""Clean-pass cache entries are keyed by what a file holds (issue 22): datasets whose files share names, sizes and
modification times (cp -p, rsync -a, tar) never read each other's entries; the same bytes under the same name are
served from the cache wherever they live."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqa_saliency.caches.clean import CLEAN_FIELDS, CleanCache
from iqa_saliency.data.sources import ImageFolder
from iqa_saliency.data.splits import SubsetSource

N = 12
SIZE = (40, 32)


def _bmp(path: Path, seed: int) -> None:
    """A random BMP: every picture of one size has the same file size."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(path)


def twin_folders(root: Path, n: int = N) -> tuple[Path, Path]:
    """A and B: the same names, sizes and modification times, other pixels (B as `cp -p` would leave it after
    the files were replaced), plus one file whose bytes are the same in both."""
    a, b = root / "A", root / "B"
    for k in range(n):
        _bmp(a / f"img{k:02d}.bmp", seed=k)
        _bmp(b / f"img{k:02d}.bmp", seed=100 + k)
    _bmp(a / "same.bmp", seed=7)
    shutil.copy2(a / "same.bmp", b / "same.bmp")
    for path in a.iterdir():
        st = path.stat()
        os.utime(b / path.name, ns=(st.st_atime_ns, st.st_mtime_ns))
    return a, b


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"q_global": np.float32(value), "q_local": np.full((20, 20), value, np.float32),
            "probs": np.full(4, value, np.float32),
            "logits": np.full(4, value, np.float32), "attribution": np.full((8, 8), value, np.float32)}


def test_twins_share_stat_stamps_but_not_content_ids(tmp_path):
    a, b = twin_folders(tmp_path)
    fa, fb = ImageFolder(a), ImageFolder(b)
    assert [r.image_id for r in fa.records] == [r.image_id for r in fb.records]
    for ra, rb in zip(fa.records, fb.records, strict=True):
        assert fa.stamp(ra) == fb.stamp(rb)  # what the old key saw: indistinguishable
        for source, record in ((fa, ra), (fb, rb)):  # the content id is the sha256 of the bytes
            assert source.content_id(record) == "sha256:" + hashlib.sha256(Path(record.path).read_bytes()).hexdigest()
        same = Path(ra.path).read_bytes() == Path(rb.path).read_bytes()
        assert (fa.content_id(ra) == fb.content_id(rb)) == same
    sub = SubsetSource(fb, [3, 1])
    assert [sub.content_id(r) for r in sub.records] == [fb.content_id(fb.records[i]) for i in (1, 3)]


def test_a_cache_filled_from_one_twin_serves_the_other_nothing_but_identical_files(tmp_path):
    a, b = twin_folders(tmp_path)
    cache = CleanCache(tmp_path / "cache", {"k": 1})
    fa, fb = ImageFolder(a), ImageFolder(b)
    for i, record in enumerate(fa.records):
        cache.put(record.image_id, _arrays(float(i)), np.full((4, 4, 3), i, np.uint8), fa.content_id(record))
    for i, (ra, rb) in enumerate(zip(fa.records, fb.records, strict=True)):
        got = cache.read(rb.image_id, fb.content_id(rb))
        if Path(ra.path).read_bytes() == Path(rb.path).read_bytes():
            assert got is not None and float(got["q_global"]) == float(i)
        else:
            assert got is None, rb.image_id
    # B's entries are written beside A's, never over them
    for i, record in enumerate(fb.records):
        cache.put(record.image_id, _arrays(100.0 + i), np.zeros((4, 4, 3), np.uint8), fb.content_id(record))
    for i, record in enumerate(fa.records):
        got = cache.read(record.image_id, fa.content_id(record))
        want = 100.0 + i if record.image_id == "same.bmp" else float(i)
        assert got is not None and set(got) == {*CLEAN_FIELDS, "image"} and float(got["q_global"]) == want


def test_a_file_is_hashed_once_per_source(tmp_path, monkeypatch):
    a, _ = twin_folders(tmp_path, n=3)
    source = ImageFolder(a)
    opened: list[str] = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    import builtins

    monkeypatch.setattr(builtins, "open", counting_open)
    for _ in range(3):
        ids = [source.content_id(r) for r in source.records]
    assert sorted(opened) == sorted(r.path for r in source.records) and len(set(ids)) == len(ids)


@pytest.mark.slow
def test_a_sweep_over_twin_roots_gives_each_root_its_own_numbers(tmp_path):
    from helpers.cli import run_cli

    a, b = twin_folders(tmp_path, n=4)
    common = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false", "dataset=folder",
              "dataset.resize=64", "dataset.crop=64", "dataset.num_workers=0", "figures=0", "save_maps=false",
              "corruption=contrast", "severity=1"]
    sweep = tmp_path / "sweep"
    proc = run_cli("evaluate.py", "-m", *common, f"dataset.root={a},{b}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for root in (a, b):
        alone = tmp_path / f"alone_{root.name}"
        proc = run_cli("evaluate.py", *common, f"dataset.root={root}", "clean_cache=null", f"hydra.run.dir={alone}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        cells = [p.parent for p in sweep.glob("*/per_image.csv")
                 if f"dataset.root={root}" in (p.parent / ".hydra" / "overrides.yaml").read_text()]
        assert len(cells) == 1, list(sweep.iterdir())
        got, want = pd.read_csv(cells[0] / "per_image.csv"), pd.read_csv(alone / "per_image.csv")
        for column in ("mos_clean", "clean_pred", "clean_pred_prob", "attr_stability_cc"):
            np.testing.assert_allclose(got[column], want[column], rtol=1e-5, atol=1e-6, err_msg=column)
