"""The caches' on-disk layout restated from its description (hashlib, json and numpy only): where an entry of a key
lives, what its key.json says, which fields an entry must hold and of which type, so a key part that drops out or
an entry that is served though incomplete shows."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from iqa_saliency.caches.clean import CleanCache
from iqa_saliency.caches.corruption import CachedCorruption
from iqa_saliency.corruption import apply_corruption, backend_version
from iqa_saliency.io.entries import read_entry, write_entry

IMAGE = np.random.default_rng(3).integers(0, 256, (34, 38, 3), dtype=np.uint8)
FIELDS = ("q_global", "q_local", "probs", "logits", "attribution")


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"q_global": np.float32(value), "q_local": np.full((20, 20), value, np.float32),
            "probs": np.full(4, value, np.float32),
            "logits": np.full(4, value, np.float32), "attribution": np.full((34, 38), value, np.float32)}


def test_clean_folder_is_the_digest_of_the_sorted_key_with_the_entry_format(tmp_path):
    # a path and a value JSON has no type for (a dtype) are keyed and written as their text
    parts = {"weights": Path("/w/model.pt"), "resize": 256, "attribution": "gradcam", "dtype": torch.bfloat16}
    cache = CleanCache(tmp_path / "nested" / "root", parts)
    as_text = {"weights": "/w/model.pt", "resize": 256, "attribution": "gradcam", "dtype": "torch.bfloat16",
               "entry_format": 5}
    key = hashlib.sha256(json.dumps(as_text, sort_keys=True).encode()).hexdigest()[:20]
    assert cache.key == key and cache.dir == tmp_path / "nested" / "root" / key and cache.dir.is_dir()
    assert (cache.dir / "key.json").read_text() == json.dumps(as_text, indent=2, sort_keys=True) + "\n"
    assert cache.stats() == {"dir": str(cache.dir), "hits": 0, "misses": 0}
    (cache.dir / "key.json").write_text("left alone\n")  # an existing key.json is not rewritten
    again = CleanCache(tmp_path / "nested" / "root", parts)
    assert again.dir == cache.dir and (cache.dir / "key.json").read_text() == "left alone\n"


def test_clean_entry_file_is_named_by_image_id_and_content(tmp_path):
    cache = CleanCache(tmp_path, {"k": 1})
    image_id = "class a/" + "x" * 70 + "+1.png"
    cache.put(image_id, _arrays(1.5), IMAGE, stamp="abc")
    digest = hashlib.sha256(f"{image_id}\0abc".encode()).hexdigest()[:24]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)
    path = cache.dir / f"{safe[-60:]}-{digest}.npz"
    assert [p.name for p in cache.dir.glob("*.npz")] == [path.name]
    stored = read_entry(path)
    assert set(stored) == {*FIELDS, "image", "stamp"} and str(stored["stamp"]) == "abc"
    assert stored["image"].dtype == np.uint8 and np.array_equal(stored["image"], IMAGE)


def test_clean_image_is_stored_as_uint8_and_the_stamp_defaults_to_empty(tmp_path):
    cache = CleanCache(tmp_path, {"k": 1})
    cache.put("f.png", _arrays(1.0), IMAGE.astype(np.float64), stamp="s")
    got = cache.read("f.png", "s")
    assert got["image"].dtype == np.uint8 and np.array_equal(got["image"], IMAGE)
    cache.put("g.png", _arrays(2.0), IMAGE)
    assert str(read_entry(cache._path("g.png", ""))["stamp"]) == ""
    assert float(cache.read("g.png")["q_global"]) == 2.0 and cache.read("g.png", "s") is None


def test_clean_entry_missing_a_field_or_its_stamp_is_discarded(tmp_path, caplog):
    cache = CleanCache(tmp_path, {"k": 1})
    full = {**_arrays(1.0), "image": IMAGE, "stamp": np.array("s")}
    for missing in (*FIELDS, "image", "stamp"):
        path = cache._path("m.png", "s")
        write_entry(path, {k: v for k, v in full.items() if k != missing})
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cache.read("m.png", "s") is None, missing
        assert not path.exists(), missing  # deleted, so the image is computed and written again
        assert [r.getMessage() for r in caplog.records] == [
            f"Damaged clean-cache entry {path} (fields missing): deleted; it is recomputed."]
    write_entry(cache._path("m.png", "s"), full)
    got = cache.read("m.png", "s")
    assert set(got) == {*FIELDS, "image"} and float(got["q_global"]) == 1.0


def test_corruption_entry_path_is_the_digest_of_shape_pixels_and_settings(tmp_path):
    for backend, key_backend in (("numpy", backend_version()), ("torch==9|cpu", f"torch==9|cpu|{backend_version()}")):
        cache = CachedCorruption(tmp_path, backend)
        digest = hashlib.sha256(
            str(IMAGE.shape).encode() + IMAGE.tobytes() + f"|motion_blur|3|11|{key_backend}".encode()).hexdigest()
        assert cache.path(IMAGE, "motion_blur", 3, 11) == tmp_path / "motion_blur" / "3" / digest[:2] / f"{digest}.npz"
    view = IMAGE[:, ::-1]  # a non-contiguous view: its pixels in row-major order, not its memory's
    digest = hashlib.sha256(str(view.shape).encode() + view.copy().tobytes()
                            + f"|snow|1|0|{backend_version()}".encode()).hexdigest()
    assert CachedCorruption(tmp_path).path(view, "snow", 1, 0).name == f"{digest}.npz"


def test_corruption_entry_not_uint8_or_without_image_is_recomputed(tmp_path, caplog):
    cache = CachedCorruption(tmp_path)
    want = apply_corruption(IMAGE, "contrast", 2, 4)
    path = cache.path(IMAGE, "contrast", 2, 4)
    for planted in ({"image": want.astype(np.int16)}, {"pixels": want}):
        write_entry(path, planted)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert cache.lookup(IMAGE, "contrast", 2, 4) is None and not path.exists()
        assert [r.getMessage() for r in caplog.records] == [
            f"Damaged corruption-cache entry {path} (not an image of the input's shape): deleted; it is recomputed."]
    stored = cache(IMAGE, "contrast", 2, 4)
    np.testing.assert_array_equal(stored, want)
    np.testing.assert_array_equal(read_entry(path)["image"], want)


def test_stacked_entries_are_float32_with_shapes_from_the_first_found():
    from iqa_saliency.caches.clean import stack_clean_entries

    small = {k: v[..., :5] if v.ndim else v for k, v in _arrays(2.0).items()}  # a foreign entry's shapes
    stacked = stack_clean_entries([None, _arrays(1.0), small, _arrays(3.0)])
    assert stacked["found"].dtype == torch.bool and stacked["found"].tolist() == [False, True, False, True]
    for key in FIELDS:
        assert stacked[key].dtype == torch.float32 and stacked[key].shape == (4, *_arrays(0.0)[key].shape)
        assert [float(stacked[key][i].flatten()[0]) for i in range(4)] == [0.0, 1.0, 0.0, 3.0]
    empty = stack_clean_entries([])  # an empty group still gives a boolean mask
    assert set(empty) == {"found"} and empty["found"].dtype == torch.bool and empty["found"].shape == (0,)
