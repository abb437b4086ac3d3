"""The plumbing of a run, end to end: which images of a class folder are evaluated, with which label, prepared and
corrupted in which order, and which value lands in which column of per_image.csv and in summary.json.

The models are built so that every answer is known by construction (tests/helpers/plumbing_models.py): a
classifier whose logits are means of channel mixes over a region per class (its own class order, matched to the
folders by name) and a quality model whose score reads the green of the top half. Every column is recomputed here
from the files on disk with PIL, numpy and imagecorruptions (tests/helpers/plumbing_reference.py), never with the
project's code. Three cells run in this process through the command line's code (`evaluate_cell` on the composed
configuration); the first also runs through `python evaluate.py` (slow).

* noise: gaussian_noise 5 (seeded per image), resize 40, crop 32, corrupt the crop; a broken file is skipped.
* study: contrast 4 (the image mean moves it) on the full image, then a 40 px crop with black padding (no resize);
  the study's mos.csv (Windows paths) decides a Fair/Good/Excellent filter; the true class is explained;
  quality_map=drop; an image under 32 px is skipped; the corrupted inputs are saved.
* clean: severity 0; the quality gate scores with the quality model (cached), then the val split; a small image is
  upscaled to the crop; quality_map=inverted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers import plumbing_reference as pr
from helpers import reference as ref
from helpers import tiny_cell
from helpers.cli import run_cli
from helpers.plumbing_models import CLASS_NAMES
from PIL import Image
from scipy import stats

from iqa_saliency.models.paq2piq import PaQ2PiQWeights

# per image: class folder, file, (width, height), colours of the quadrants (top-left, top-right, bottom-left,
# bottom-right), noise seed
R, G, B, W, K, C, Y = (225, 25, 25), (25, 205, 45), (30, 40, 225), (205, 205, 205), (15, 15, 15), (40, 190, 200), \
    (210, 200, 30)
B2 = (30, 40, 212)
IMAGES = [
    ("Green", "a.png", (44, 36), (K, K, G, G), 1),
    ("Green", "b.png", (60, 50), (G, Y, G, B), 2),
    ("grey", "a.png", (40, 40), (W, W, W, W), 3),
    ("grey", "b.png", (30, 28), (W, K, W, W), 4),
    ("light_blue", "a.png", (64, 48), (B, C, B, C), 5),
    ("light_blue", "b.png", (50, 70), (C, C, R, C), 6),
    ("light_blue", "c.png", (40, 44), (B2, C, B2, C), 11),  # blue and light blue nearly tied: the noise flips it
    ("purple", "a.png", (48, 48), (R, B, B, R), 7),
    ("red", "a.png", (60, 50), (R, R, G, B), 8),
    ("red", "b.png", (50, 70), (G, R, K, K), 9),
    ("red", "c.png", (36, 50), (R, Y, R, Y), 10),
]
BROKEN = "red/zz_broken.png"
MOS_CSV_CATEGORY = {"purple/a.png": "Bad", "grey/b.png": "Good", "Green/a.png": "Poor"}  # others: Good


def make_dataset(root: Path) -> Path:
    for folder, name, (w, h), quads, seed in IMAGES:
        rng = np.random.default_rng(seed)
        a = np.zeros((h, w, 3))
        a[: h // 2, : w // 2], a[: h // 2, w // 2:], a[h // 2:, : w // 2], a[h // 2:, w // 2:] = quads
        a += rng.normal(0, 14, a.shape)
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / folder / name)
    (root / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "red" / "notes.txt").write_text("not an image")
    return root


def write_mos_csv(path: Path, listed: list[pr.Listed]) -> None:
    """The study's mos.csv: Windows paths relative to its working folder, scores and categories of its own."""
    lines = ["image_path,global_score,normalized_global_score,category"]
    for i, item in enumerate(listed):
        category = MOS_CSV_CATEGORY.get(item.image_id, "Good")
        lines.append(f"datasets\\mit-indoor\\{item.image_id.replace('/', chr(92))},{60 + i},{50 + i},{category}")
    path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Variant:
    name: str
    corruption: str
    severity: int
    resize: int | None
    crop: int
    corrupt_at: str = "crop"
    small: str = "upscale"
    target: str = "pred"
    quality_map: str = "raw"
    batch_size: int = 3
    seed: int = 0
    mos_csv_filter: tuple[str, ...] = ()
    scored_filter: tuple[str, ...] = ()
    split: str = "all"
    val_fraction: float = 0.2
    split_seed: int = 0
    save_images: bool = False
    overrides: tuple[str, ...] = field(default=())


VARIANTS = {
    "noise": Variant("noise", "gaussian_noise", 5, resize=40, crop=32, seed=7),
    "study": Variant("study", "contrast", 4, resize=None, crop=40, corrupt_at="full_size", small="pad",
                     target="label", quality_map="drop", batch_size=2, mos_csv_filter=("Fair", "Good", "Excellent"),
                     save_images=True),
    "clean": Variant("clean", "none", 0, resize=None, crop=32, quality_map="inverted", batch_size=4,
                     scored_filter=("Fair", "Good", "Excellent"), split="val", val_fraction=0.5, split_seed=3),
}


def overrides(v: Variant, root: Path, tmp: Path) -> list[str]:
    out = [
        "dataset=folder", f"dataset.root={root}", "classifier._target_=helpers.plumbing_models.load_classifier",
        "quality._target_=helpers.plumbing_models.load_quality", "attribution=saliency", "logger=none", "figures=0",
        "dataset.num_workers=0", "trainer.enable_progress_bar=false", "clean_cache=null",
        f"corruption={v.corruption}", f"severity={v.severity}", f"seed={v.seed}",
        f"dataset.resize={'null' if v.resize is None else v.resize}", f"dataset.crop={v.crop}",
        f"dataset.corrupt_at={v.corrupt_at}", f"dataset.small={v.small}", f"dataset.batch_size={v.batch_size}",
        f"attribution.target={v.target}", f"similarity.quality_map={v.quality_map}",
        f"dataset.save_images={str(v.save_images).lower()}", f"dataset.split={v.split}",
        f"dataset.val_fraction={v.val_fraction}", f"dataset.split_seed={v.split_seed}",
        f"dataset.quality_cache={tmp / 'quality_cache.csv'}", *v.overrides,
    ]
    if v.mos_csv_filter:
        out += [f"dataset.quality_scores={tmp / 'mos.csv'}", f"dataset.quality_filter=[{','.join(v.mos_csv_filter)}]"]
    if v.scored_filter:
        out += [f"dataset.quality_filter=[{','.join(v.scored_filter)}]"]
    return out


@dataclass
class Run:
    variant: Variant
    root: Path
    run_dir: Path
    rows: list[dict[str, str]]
    skipped: list[dict[str, str]]
    summary: dict


def _in_process(v: Variant, root: Path, tmp: Path) -> Path:
    from omegaconf import open_dict, read_write

    from iqa_saliency.api import compose_config
    from iqa_saliency.cli.evaluate import evaluate_cell

    cfg = compose_config(overrides(v, root, tmp))
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    run_dir = tmp / "run"
    evaluate_cell(cfg, str(run_dir))
    return run_dir


def _command_line(v: Variant, root: Path, tmp: Path) -> Path:

    run_dir = tmp / "run"
    proc = run_cli("evaluate.py", *overrides(v, root, tmp), f"hydra.run.dir={run_dir}", tests_importable=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


def _run(name: str, how, tmp_path_factory) -> Run:  # noqa: ANN001
    v = VARIANTS[name]
    tmp = tmp_path_factory.mktemp(f"plumbing-{name}")
    root = make_dataset(tmp / "data")
    write_mos_csv(tmp / "mos.csv", pr.list_class_folders(root)[1])
    run_dir = how(v, root, tmp)
    skipped = pr.read_csv(run_dir / "skipped.csv") if (run_dir / "skipped.csv").exists() else []
    return Run(v, root, run_dir, pr.read_csv(run_dir / "per_image.csv"), skipped,
               json.loads((run_dir / "summary.json").read_text()))


@pytest.fixture(scope="module", params=[
    "noise", "study", "clean", pytest.param("noise-cli", marks=pytest.mark.slow)])
def run(request, tmp_path_factory) -> Run:
    if request.param.endswith("-cli"):
        return _run(request.param[:-4], _command_line, tmp_path_factory)
    return _run(request.param, _in_process, tmp_path_factory)


# ---------------------------------------------------------------------------------------------- the reference


@dataclass
class Expected:
    """What the run must hold: the images evaluated (with their dataset index), those skipped, and the values."""

    kept: list[pr.Listed]  # the dataset after the quality gate and the split, in run order
    rows: dict[str, dict]  # image id -> expected columns
    skipped: dict[str, int]  # image id -> index
    quality_report: dict | None = None


def selected(v: Variant, root: Path, tmp: Path) -> tuple[list[str], list[pr.Listed], dict | None]:
    """The folder's classes and the images the run evaluates: the quality gate first, then the split."""
    classes, listed = pr.list_class_folders(root)
    report = None
    if v.mos_csv_filter or v.scored_filter:
        if v.mos_csv_filter:
            categories = [MOS_CSV_CATEGORY.get(item.image_id, "Good") for item in listed]
            keep = v.mos_csv_filter
        else:
            categories = []
            for item in listed:
                try:
                    x = pr.as_unit(pr.prepare(pr.decode(item.path), v.resize, v.crop))
                except Exception:  # noqa: BLE001 - unreadable: never kept
                    categories.append("")
                    continue
                categories.append(ref.paq_category(ref.paq_normalise(pr.region_quality(x)[0])))
            keep = v.scored_filter
        report = {"categories": dict(zip([i.image_id for i in listed], categories, strict=True)), "keep": keep}
        listed = [item for item, c in zip(listed, categories, strict=True) if c in keep]
    if v.split != "all":
        from helpers.reference import stratified_split

        train, val = stratified_split([(i.image_id, i.folder_label) for i in listed], v.val_fraction, v.split_seed)
        listed = [listed[i] for i in (val if v.split == "val" else train)]
    return classes, listed, report


def expected_run(v: Variant, root: Path, tmp: Path) -> Expected:
    classes, kept, report = selected(v, root, tmp)
    by_name = {pr.canonical(n): i for i, n in enumerate(CLASS_NAMES)}
    rows, skipped = {}, {}
    for index, item in enumerate(kept):
        label = by_name.get(pr.canonical(classes[item.folder_label]))
        try:
            image = pr.decode(item.path)
            if v.corrupt_at == "full_size" and v.severity > 0:
                full = pr.prepare(image, v.resize, None)
                clean = pr.prepare(Image.fromarray(full), None, v.crop, v.small)
                corrupted = pr.prepare(
                    Image.fromarray(pr.corrupt(full, v.corruption, v.severity, v.seed, item.image_id)), None, v.crop,
                    v.small)
            else:
                clean = pr.prepare(image, v.resize, v.crop, v.small)
                corrupted = pr.corrupt(clean, v.corruption, v.severity, v.seed, item.image_id)
        except Exception:  # noqa: BLE001 - an unusable file: skipped with its index
            skipped[item.image_id] = index
            continue
        rows[item.image_id] = expected_row(v, item, index, label, clean, corrupted)
    return Expected(kept, rows, skipped, report)


def expected_row(v: Variant, item: pr.Listed, index: int, label: int | None, clean: np.ndarray,
                 corrupted: np.ndarray) -> dict:
    """tiny_cell's row of the construction, plus the columns and values these cells also check."""
    row = tiny_cell.expected_row(index, item.image_id, label, clean, corrupted, target=v.target,
                                 quality_map=v.quality_map)
    p_corr = np.sort(pr.softmax(pr.region_logits(pr.as_unit(corrupted))))
    row.update(corruption=v.corruption, severity=v.severity, maps=f"maps/{row['stem']}.npz",
               _margin=float(p_corr[-1] - p_corr[-2]))
    return row


@pytest.fixture(scope="module")
def expected(run) -> Expected:
    return expected_run(run.variant, run.root, run.root.parent)


# -------------------------------------------------------------------------------------------------- the tests

# the columns docs/outputs.md lists for per_image.csv, in its order
COLUMNS = ["index", "image", "label", "label_name", "corruption", "severity", "mos", "mos_normalized",
           "quality_category", "mos_clean", "quality_category_clean", "mos_drop", "pred", "pred_name", "pred_prob",
           "clean_pred", "clean_pred_prob", "confidence_drop", "flipped", "correct_top1", "correct_top5", "sim_cc",
           "sim_sim", "sim_kld", "sim_spearman", "sim_cc_local", "sim_cc_qattr", "attr_stability_cc",
           "quality_stability_cc", "change_cc", "change_spearman", "sim_cc_clean", "attr_ris", "attr_ros",
           "deletion_auc_clean", "deletion_auc", "insertion_auc_clean", "insertion_auc", "maps", "quality_weights",
           "classifier_weights", "quality_map_kind"]


def _rows(run: Run, expected: Expected) -> list[tuple[dict[str, str], dict]]:
    assert [r["image"] for r in run.rows] == list(expected.rows)
    return [(r, expected.rows[r["image"]]) for r in run.rows]


def test_the_case_tells_the_plumbing_apart(run, expected):
    """The design exercises what a one-line plumbing bug would change (else the checks below prove little)."""
    classes, listed = pr.list_class_folders(run.root)
    rows = list(expected.rows.values())
    assert all(r["_margin"] > 1e-3 for r in rows)  # no near-tie that float32 could turn over
    matched = {c: CLASS_NAMES.index(pr.canonical(c)) for c in classes if pr.canonical(c) in CLASS_NAMES}
    assert all(classes.index(c) != j for c, j in matched.items())  # folder order is not the classifier's
    name = run.variant.name
    if name == "noise":
        assert any(r["flipped"] for r in rows) and not all(r["flipped"] for r in rows)
        assert {(r["correct_top1"], r["correct_top5"]) for r in rows} == {(1.0, 1.0), (0.0, 1.0), (0.0, 0.0),
                                                                          (None, None)}
        assert expected.skipped and len(expected.kept) == len(listed)
    if name == "study":
        assert any(r["flipped"] for r in rows)
        assert len(expected.skipped) == 2 and len(expected.kept) < len(listed)
        assert any(math.isnan(r["sim_cc"]) for r in rows)  # a constant map: blank, left out of the means
    if name == "clean":
        scored = expected.quality_report["categories"]
        passed = [i for i, c in scored.items() if c in run.variant.scored_filter]
        assert len(expected.kept) < len(passed) < len(listed)  # the gate and the split both drop images


def test_which_images_are_evaluated_and_skipped(run, expected):
    header = list(run.rows[0])
    assert [c for c in header if c in COLUMNS] == COLUMNS  # in docs/outputs.md's order (columns added later may follow)
    assert [(int(r["index"]), r["image"]) for r in run.rows] == [(e["index"], i) for i, e in expected.rows.items()]
    assert [(int(r["index"]), r["image"]) for r in run.skipped] == list(
        (i, image) for image, i in expected.skipped.items())
    assert all(r["reason"] for r in run.skipped)
    assert (run.summary["n_images"], run.summary["n_skipped"]) == (len(expected.rows), len(expected.skipped))


def test_label_columns(run, expected):
    for r, e in _rows(run, expected):
        assert pr.number(r["label"]) == e["label"], r["image"]
        assert (r["label_name"] or None) == e["label_name"], r["image"]
        assert (r["corruption"], int(r["severity"])) == (e["corruption"], e["severity"])


def test_quality_columns(run, expected):
    for r, e in _rows(run, expected):
        for col in ("mos", "mos_clean", "mos_drop", "mos_normalized"):
            assert pr.close(pr.number(r[col]), e[col], rel=1e-5, abs_=2e-4), (r["image"], col)
        assert r["quality_category"] == e["quality_category"], r["image"]


def test_classification_columns(run, expected):
    for r, e in _rows(run, expected):
        assert (int(r["pred"]), r["pred_name"], int(r["clean_pred"])) == (e["pred"], e["pred_name"], e["clean_pred"])
        for col in ("pred_prob", "clean_pred_prob"):
            assert pr.close(pr.number(r[col]), e[col], rel=1e-5), (r["image"], col)
        assert pr.number(r["flipped"]) == e["flipped"], r["image"]
        assert pr.number(r["correct_top1"]) == e["correct_top1"], r["image"]
        assert pr.number(r["correct_top5"]) == e["correct_top5"], r["image"]


def test_maps_and_similarity_columns(run, expected):
    for r, e in _rows(run, expected):
        assert r["maps"] == e["maps"]
        maps = np.load(run.run_dir / r["maps"])
        np.testing.assert_allclose(maps["quality_map"], e["_qmap"], atol=1e-4)
        np.testing.assert_allclose(maps["quality_map_clean"], e["_qmap_clean"], atol=1e-4)
        np.testing.assert_allclose(maps["attribution"], e["_attr"], rtol=1e-5, atol=1e-7)
        # the similarities of the saved float32 maps (equal to the construction's, above): Spearman's ranks of a
        # nearly flat quality map are not stable under rounding, so the variants are taken in float32 as well
        q, q_clean = maps["quality_map"], maps["quality_map_clean"]
        saved = {"raw": q, "inverted": np.float32(100) - q, "drop": q_clean - q}[run.variant.quality_map]
        want = ref.similarities(np.asarray(saved, np.float64), maps["attribution"].astype(np.float64))
        for col, value in want.items():
            assert pr.close(pr.number(r[col]), value, rel=1e-6, abs_=1e-9), (r["image"], col)
            if col != "sim_spearman":
                assert pr.close(value, e[col], rel=1e-4, abs_=1e-5), (r["image"], col)
        assert pr.close(pr.number(r["attr_stability_cc"]), e["attr_stability_cc"], rel=1e-5), r["image"]
        assert r["sim_cc_local"] == "" and r["sim_cc_qattr"] == ""  # no quality attribution in these runs


def _mean(values) -> float | None:  # noqa: ANN001
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def test_summary_numbers(run, expected):
    rows, v, s = list(expected.rows.values()), run.variant, run.summary
    col = {k: [e[k] for e in rows] for k in rows[0]}
    means = {"acc/top1": "correct_top1", "acc/top5": "correct_top5", "robustness/flip_rate": "flipped",
             "quality/mos_clean_mean": "mos_clean", "quality/mos_drop": "mos_drop",
             "quality/mos_normalized_mean": "mos_normalized", "similarity/cc": "sim_cc", "similarity/sim": "sim_sim",
             "similarity/kld": "sim_kld", "similarity/spearman": "sim_spearman",
             "attribution/stability_cc": "attr_stability_cc", "quality/mos_mean": "mos"}
    metrics = s["metrics"]
    for key, column in means.items():
        assert pr.close(metrics[key], _mean(col[column]), rel=1e-4, abs_=1e-4), key
    assert metrics["similarity/cc_local"] is None and metrics["similarity/cc_qattr"] is None
    assert pr.close(metrics["quality/mos_std"], float(np.std(col["mos"], ddof=1)), rel=1e-4)
    assert metrics["n_images"] == len(rows)
    assert metrics["n_labeled"] == sum(e["label"] is not None for e in rows)
    rho = stats.spearmanr(col["mos"], col["clean_pred_prob"]).statistic
    assert pr.close(metrics["correlation/mos_vs_clean_pred_prob_spearman"], rho, abs_=1e-6)
    assert set(metrics) >= {*means, "similarity/cc_local", "similarity/cc_qattr", "quality/mos_std", "n_images",
                            "n_labeled", "correlation/mos_vs_clean_pred_prob_spearman"}
    assert (s["corruption"], s["severity"], s["seed"]) == (v.corruption, v.severity, v.seed)
    assert (s["attribution"], s["attribution_target"]) == ("saliency", v.target)
    assert (s["quality_saliency"], s["quality_map"]) == ("local", v.quality_map)
    assert s["label_source"] == "class names"
    # requested: what the configuration names (the default groups' weights); the rest: what the loaders returned
    assert s["weights"] == {
        "quality": {"name": "region-quality", "source": "tests/helpers/plumbing_models.py", "sha256": "1" * 64,
                    "requested": PaQ2PiQWeights.OFFICIAL.value.url, "untrained": False, "fallback": None},
        "classifier": {"name": "region-rules", "source": "tests/helpers/plumbing_models.py", "sha256": "0" * 64,
                       "requested": "resnet18:IMAGENET1K_V1", "untrained": False, "fallback": None},
        "untrained": False, "fell_back": []}
    assert s["explained_layer"] == {"classifier": None, "quality": None}  # saliency and local scores: no layer
    assert {r["quality_weights"] for r in run.rows} == {"region-quality"}
    assert {r["classifier_weights"] for r in run.rows} == {"region-rules"}
    # a PaQ-2-PiQ-shaped quality model (no map_kind of its own): its map is its local scores, on every row
    assert {r["quality_map_kind"] for r in run.rows} == {s["quality_map_kind"]} == {"model:paq2piq_local_scores"}
    assert s["classifier"] == {"arch": "region", "num_classes": len(CLASS_NAMES)}
    used = "none" if v.severity == 0 else "numpy"
    assert (s["corruption_backend"]["requested"], s["corruption_backend"]["used"]) == ("numpy", used)
    assert s["score_normalizer"] == {"peak": 72.0, "std_left": ref.PAQ_STD_LEFT, "std_right": ref.PAQ_STD_RIGHT,
                                     "n_std": 3.5, "clip_max": 99.9, "name": "study_defaults"}
    assert (s["clean_cache"], s["world_size"], s["resumed"], s["device"]) == (None, 1, False, "cpu")
    data = s["config"]["dataset"]
    assert (data["root"], data["resize"], data["crop"], data["split"]) == (str(run.root), v.resize, v.crop, v.split)


def test_saved_inputs_are_the_corrupted_images(run, expected):
    if not run.variant.save_images:
        assert not (run.run_dir / "images").exists()
        return
    for _, e in _rows(run, expected):
        saved = np.asarray(Image.open(run.run_dir / "images" / (Path(e["maps"]).stem + ".png")))
        np.testing.assert_array_equal(saved, e["_corrupted"])


def test_quality_gate_report(run, expected):
    if expected.quality_report is None:
        assert not (run.run_dir / "quality_filter.json").exists()
        return
    categories, keep = expected.quality_report["categories"], expected.quality_report["keep"]
    report = json.loads((run.run_dir / "quality_filter.json").read_text())
    counts = {c: sum(v == c for v in categories.values()) for c in ref.PAQ_CATEGORIES}
    if "" in categories.values():
        counts["unreadable"] = sum(v == "" for v in categories.values())
    kept = sum(c in keep for c in categories.values())
    scored_now = len(categories) if run.variant.scored_filter else 0
    assert report == {"counts": counts, "keep": list(keep), "n_total": len(categories), "n_kept": kept,
                      "n_scored_now": scored_now}
    scores = pr.read_csv(run.run_dir / "quality_scores.csv")
    assert [(r["image"], r["quality_category"], r["kept"]) for r in scores] == [
        (i, c, str(int(c in keep))) for i, c in categories.items()]
