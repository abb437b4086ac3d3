"""What the caches key their entries by: a changed input, setting, seed or backend must never be served an entry
made for another, and the same ones must always be served it."""

from __future__ import annotations

import numpy as np
import torch

from iqa_saliency.caches.clean import CLEAN_FIELDS, CleanCache, stack_clean_entries
from iqa_saliency.caches.corruption import CachedCorruption, torch_backend_id
from iqa_saliency.corruption import apply_corruption

IMAGE = np.random.default_rng(1).integers(0, 256, (36, 40, 3), dtype=np.uint8)


def test_corruption_entries_differ_by_image_corruption_severity_seed_and_backend(tmp_path):
    cache = CachedCorruption(tmp_path)
    base = cache.path(IMAGE, "gaussian_noise", 2, 7)
    other_pixels = IMAGE.copy()
    other_pixels[0, 0, 0] ^= 1
    others = [cache.path(other_pixels, "gaussian_noise", 2, 7), cache.path(IMAGE[:, :39], "gaussian_noise", 2, 7),
              cache.path(IMAGE, "shot_noise", 2, 7), cache.path(IMAGE, "gaussian_noise", 3, 7),
              cache.path(IMAGE, "gaussian_noise", 2, 8), CachedCorruption(tmp_path, "torch==x|cpu").path(
                  IMAGE, "gaussian_noise", 2, 7)]
    assert len({base, *others}) == 7
    assert base == CachedCorruption(tmp_path).path(IMAGE.copy(), "gaussian_noise", 2, 7)  # content, not identity
    assert base.relative_to(tmp_path).parts[:2] == ("gaussian_noise", "2")
    # the same pixels in another shape are another image
    assert cache.path(IMAGE.reshape(40, 36, 3), "gaussian_noise", 2, 7) != base


def test_corruption_cache_serves_what_it_stored_and_computes_the_rest(tmp_path):
    cache = CachedCorruption(tmp_path)
    assert cache.lookup(IMAGE, "gaussian_noise", 2, 7) is None
    out = cache(IMAGE, "gaussian_noise", 2, 7)
    np.testing.assert_array_equal(out, apply_corruption(IMAGE, "gaussian_noise", 2, 7))
    np.testing.assert_array_equal(cache.lookup(IMAGE, "gaussian_noise", 2, 7), out)
    planted = np.zeros_like(IMAGE)  # a stored entry is served as it is, not recomputed
    cache.store(IMAGE, "gaussian_noise", 2, 8, planted)
    np.testing.assert_array_equal(cache(IMAGE, "gaussian_noise", 2, 8), planted)
    assert cache(IMAGE, "none", 3, 7) is IMAGE and cache(IMAGE, "snow", 0, 7) is IMAGE
    assert not (tmp_path / "none").exists() and not (tmp_path / "snow").exists()
    assert CachedCorruption(tmp_path, torch_backend_id("cpu")).lookup(IMAGE, "gaussian_noise", 2, 7) is None
    assert torch_backend_id("cuda") == f"torch=={torch.__version__}|cuda"


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"q_global": np.float32(value), "q_local": np.full((20, 20), value, np.float32),
            "probs": np.full(4, value, np.float32),
            "logits": np.full(4, value, np.float32), "attribution": np.full((36, 40), value, np.float32)}


def test_clean_cache_folders_differ_by_every_key_part(tmp_path):
    parts = {"weights": "a", "attribution": "gradcam", "resize": 256, "seed": 0}
    folders = {CleanCache(tmp_path, parts).dir}
    for key, value in (("weights", "b"), ("attribution", "saliency"), ("resize", None), ("seed", 1), ("new", 1)):
        folders.add(CleanCache(tmp_path, {**parts, key: value}).dir)
    assert len(folders) == 6
    assert CleanCache(tmp_path, dict(reversed(parts.items()))).dir == CleanCache(tmp_path, parts).dir


def test_clean_cache_entries_are_per_image_and_file_version(tmp_path):
    cache = CleanCache(tmp_path, {"k": 1})
    cache.put("a/img.png", _arrays(2.0), IMAGE, "10:123")
    got = cache.read("a/img.png", "10:123")
    assert set(got) == {*CLEAN_FIELDS, "image"}
    np.testing.assert_array_equal(got["image"], IMAGE)
    np.testing.assert_array_equal(got["q_local"], _arrays(2.0)["q_local"])
    assert cache.read("a/img.png", "10:124") is None  # the file changed since
    assert cache.read("a_img.png", "10:123") is None  # another image whose safe name is the same
    assert cache.read("b/img.png", "10:123") is None
    cache.count(3, 5)
    cache.count(2, 2)
    assert cache.stats() == {"dir": str(cache.dir), "hits": 5, "misses": 2}


def test_stacked_lookups_mark_what_was_found():
    stacked = stack_clean_entries([_arrays(1.0), None, _arrays(3.0)])
    assert stacked["found"].tolist() == [True, False, True]
    assert stacked["q_global"].tolist() == [1.0, 0.0, 3.0]
    assert stacked["attribution"].shape == (3, 36, 40)
    odd = {**_arrays(5.0), "attribution": np.zeros((8, 8), np.float32)}  # a foreign entry: not found
    assert stack_clean_entries([_arrays(1.0), odd])["found"].tolist() == [True, False]
    assert set(stack_clean_entries([None, None])) == {"found"}


def test_backend_identity_in_the_key():
    from iqa_saliency.corruption import backend_version

    # numpy's key is the reference's version alone (entries written before the torch backend stay valid)
    assert CachedCorruption("x").backend == backend_version()
    assert CachedCorruption("x", "torch==2|cpu").backend == f"torch==2|cpu|{backend_version()}"
