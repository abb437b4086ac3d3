"""Cache entries of both caches: damaged, empty or truncated ones are detected (sha256), deleted with a log line and
recomputed, never used; processes racing on one entry never let a reader see half of it."""

from __future__ import annotations

import logging
import multiprocessing as mp

import numpy as np
import pytest

from iqa_saliency.caches import corruption as corruption_cache
from iqa_saliency.caches.clean import CLEAN_FIELDS, CleanCache
from iqa_saliency.caches.corruption import CachedCorruption
from iqa_saliency.corruption import apply_corruption
from iqa_saliency.io.entries import DIGEST, DamagedEntry, read_entry, write_entry

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def clean_arrays(value: float = 1.0) -> dict[str, np.ndarray]:
    return {"q_global": np.float32(value), "q_local": np.full((20, 20), value, np.float32),
            "probs": np.full(10, value / 10, np.float32),
            "logits": np.full(10, value, np.float32), "attribution": np.full((40, 48), value, np.float32)}


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "zero":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # one pixel byte changed: the zip container stays valid, the checksum does not
        arrays = dict(np.load(path))
        key = "image"
        arrays[key] = arrays[key].copy()
        arrays[key].flat[7] ^= 0xFF
        np.savez(path, **arrays)
    elif how == "garbage":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    elif how == "no-checksum":
        arrays = {k: v for k, v in np.load(path).items() if k != DIGEST}
        np.savez(path, **arrays)


HOWS = ["zero", "truncated", "flipped", "garbage", "no-checksum"]


def test_entries_round_trip_and_refuse_a_reserved_name(tmp_path):
    write_entry(tmp_path / "e.npz", {"a": np.arange(5), "s": np.array("stamp")})
    got = read_entry(tmp_path / "e.npz")
    assert np.array_equal(got["a"], np.arange(5)) and str(got["s"]) == "stamp" and DIGEST not in got
    with pytest.raises(ValueError, match="reserved"):
        write_entry(tmp_path / "f.npz", {DIGEST: np.zeros(1)})
    with pytest.raises(FileNotFoundError):
        read_entry(tmp_path / "missing.npz")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("how", HOWS)
def test_damaged_clean_entry_is_deleted_logged_recomputed(tmp_path, caplog, how):
    cache = CleanCache(tmp_path, {"k": 1})
    cache.put("img.png", clean_arrays(), IMAGE, stamp="1:2")
    path = cache._path("img.png", "1:2")
    damage(path, how)
    with caplog.at_level(logging.WARNING):
        assert cache.read("img.png", "1:2") is None  # never the damaged arrays, never an exception
    assert not path.exists()
    lines = [r.getMessage() for r in caplog.records if "Damaged clean-cache entry" in r.getMessage()]
    assert len(lines) == 1 and str(path) in lines[0]
    cache.put("img.png", clean_arrays(2.0), IMAGE, stamp="1:2")  # the recomputed entry is written again
    entry = cache.read("img.png", "1:2")
    assert entry is not None and float(entry["q_global"]) == 2.0 and np.array_equal(entry["image"], IMAGE)
    assert set(entry) == {*CLEAN_FIELDS, "image"}


@pytest.mark.parametrize("how", HOWS)
def test_damaged_corruption_entry_is_deleted_logged_recomputed(tmp_path, caplog, how):
    cached = CachedCorruption(tmp_path)
    want = apply_corruption(IMAGE, "gaussian_noise", 2, 5)
    np.testing.assert_array_equal(cached(IMAGE, "gaussian_noise", 2, 5), want)
    path = cached.path(IMAGE, "gaussian_noise", 2, 5)
    damage(path, how)
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(cached(IMAGE, "gaussian_noise", 2, 5), want)
    assert sum("Damaged corruption-cache entry" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_array_equal(read_entry(path)["image"], want)  # rewritten whole


def test_corruption_entry_of_another_shape_is_not_used(tmp_path, monkeypatch):
    cached = CachedCorruption(tmp_path)
    path = cached.path(IMAGE, "contrast", 1, 0)
    write_entry(path, {"image": np.zeros((4, 4, 3), np.uint8)})
    calls = []
    monkeypatch.setattr(corruption_cache, "apply_corruption",
                        lambda *a: calls.append(a) or apply_corruption(*a))
    assert cached(IMAGE, "contrast", 1, 0).shape == IMAGE.shape and len(calls) == 1


def _hammer_clean(root: str, value: float, rounds: int) -> None:
    cache = CleanCache(root, {"k": 1})
    for _ in range(rounds):
        cache.put("shared.png", clean_arrays(value), IMAGE, stamp="s")


def _read_clean(root: str, rounds: int, out) -> None:
    cache = CleanCache(root, {"k": 1})
    seen = set()
    for _ in range(rounds):
        entry = cache.read("shared.png", "s")
        if entry is not None:
            values = {round(float(np.unique(entry[k])[0]) * (10 if k == "probs" else 1), 4)
                      for k in CLEAN_FIELDS}
            assert len(values) == 1, values  # every field from one writer: never a mix of two entries
            seen |= values
    out.put(sorted(seen))


def _hammer_corruption(root: str, rounds: int) -> None:
    cached = CachedCorruption(root)
    for _ in range(rounds):
        cached.path(IMAGE, "gaussian_noise", 3, 1).unlink(missing_ok=True)  # force a write every round
        cached(IMAGE, "gaussian_noise", 3, 1)


def test_processes_racing_on_one_entry_never_show_half_an_entry(tmp_path, caplog):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    root = str(tmp_path / "clean")
    procs = [ctx.Process(target=_hammer_clean, args=(root, v, 150)) for v in (1.0, 2.0)]
    procs.append(ctx.Process(target=_read_clean, args=(root, 400, out)))
    procs += [ctx.Process(target=_hammer_corruption, args=(str(tmp_path / "corr"), 60)) for _ in range(2)]
    with caplog.at_level(logging.WARNING):
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert set(out.get(timeout=5)) <= {1.0, 2.0}
    assert not any("Damaged" in r.getMessage() for r in caplog.records)
    cache = CachedCorruption(tmp_path / "corr")
    np.testing.assert_array_equal(read_entry(cache.path(IMAGE, "gaussian_noise", 3, 1))["image"],
                                  apply_corruption(IMAGE, "gaussian_noise", 3, 1))
    assert not list(tmp_path.rglob("*.tmp"))


def test_read_entry_reports_damage_as_one_type(tmp_path):
    path = tmp_path / "e.npz"
    write_entry(path, {"a": np.arange(3)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DamagedEntry):
        read_entry(path)
