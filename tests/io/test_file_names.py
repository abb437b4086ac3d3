"""Any name the file system allows (issue 22): bytes that are not UTF-8, names up to the 255-byte limit, multi-byte
characters, formula characters. Each image gets a valid-text id and file names that fit, and a run evaluates it
(or lists it in skipped.csv) without stopping the others; resume=true then finds the folder complete."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run_cli
from helpers.images import make_image

from iqa_saliency.data.sources import ImageFolder, text_id
from iqa_saliency.evaluation.module import safe_name
from iqa_saliency.io.atomic import atomic_write

NAME_MAX = os.pathconf("/tmp", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255


def generated_names(seed: int, n: int = 24) -> list[bytes]:
    """File names as bytes: invalid UTF-8, the longest allowed, multi-byte, formula starts, spaces."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            stem = bytes(rng.choice([0x80, 0xff, 0xc3, 0xfe, 0xed]) for _ in range(rng.randrange(1, 4))) + b"x%d" % i
        elif kind == 1:
            stem = b"L%d" % i + b"a" * (NAME_MAX - 4 - len(b"L%d" % i))  # the longest name (with .png)
        elif kind == 2:
            stem = ("é" * rng.randrange(60, (NAME_MAX - 4) // 2)).encode() + b"%d" % i
            stem = stem[-(NAME_MAX - 4):]
        elif kind == 3:
            stem = rng.choice([b"=", b"+", b"-", b"@"]) + b"cmd %d" % i
        elif kind == 4:
            stem = b"sp ace;,'\"%d" % i
        else:
            stem = b"\xe2\x82" + b"%d" % i  # a cut-off multi-byte sequence
        out.append(stem + b".png")
    return out


def make_folder(root: Path, names: list[bytes]) -> list[bytes]:
    made = []
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(root), name)
        try:
            make_image(Path(os.fsdecode(path)), size=(40, 36), seed=i)
        except OSError:  # a file system that refuses the name (not ext4/tmpfs): not a name it allows
            continue
        made.append(name)
    return made


@pytest.mark.parametrize("seed", range(3))
def test_every_allowed_name_gets_a_text_id_and_file_names_that_fit(tmp_path, seed):
    names = make_folder(tmp_path, generated_names(seed))
    source = ImageFolder(tmp_path)
    ids = [r.image_id for r in source.records]
    assert len(ids) == len(names) == len(set(ids))
    for record in source.records:
        record.image_id.encode("utf-8")  # valid text: CSV, JSON and digests take it
        assert source.load(record).size == (40, 36)  # read through the real name
        source.stamp(record)
        for index in (0, 999999):
            stem = f"{index:06d}_{safe_name(record.image_id)}"
            target = tmp_path / "out" / f"{stem}.npz"
            atomic_write(target, lambda fh: np.savez(fh, a=np.zeros(2)))  # temporary name included
            assert len(f"maps_elastic_transform_{safe_name(record.image_id)}.png".encode()) < NAME_MAX - 16
    assert len({safe_name(i) for i in ids}) == len(ids)


def test_text_ids_keep_valid_names_and_escape_the_rest():
    assert text_id("chat é.png") == "chat é.png"
    assert text_id(os.fsdecode(b"a\xffb.png")) == "a\\xffb.png"
    assert text_id("\ud800x") == "\\ud800x"


@pytest.mark.slow
def test_a_run_over_hostile_names_finishes_and_resume_finds_it_complete(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    names = make_folder(data, generated_names(11, 12))
    (data / "broken.png").write_bytes(b"not an image")
    run = tmp_path / "run"
    args = ["pretrained=false", "logger=none", "trainer.enable_progress_bar=false", "dataset=folder",
            f"dataset.root={data}", "dataset.resize=64", "dataset.crop=64", "dataset.num_workers=0", "figures=2",
            "dataset.save_images=true", f"hydra.run.dir={run}"]
    proc = run_cli("evaluate.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    from iqa_saliency.io.csv_safe import restore_frame

    rows = restore_frame(pd.read_csv(run / "per_image.csv", keep_default_na=False))
    skipped = restore_frame(pd.read_csv(run / "skipped.csv", keep_default_na=False))
    assert sorted([*rows["image"], *skipped["image"]]) == sorted([text_id(os.fsdecode(n)) for n in names] +
                                                                 ["broken.png"])
    assert list(skipped["image"]) == ["broken.png"]
    again = run_cli("evaluate.py", *args, "resume=true")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
