"""Quality gate: score every image once with PaQ-2-PiQ (cached on disk) and keep the chosen categories."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DatasetError, reraise_interrupt
from ..io.atomic import atomic_write, atomic_write_text, strict_json
from ..io.csv_safe import SafeDictWriter, SafeWriter, restore_row
from ..models.paq2piq import CATEGORIES, NORMALIZATIONS, PaQ2PiQ, ScoreNormalizer
from ..models.weights import WeightsIdentity
from ..progress import progress_bar
from .images import prepare_image
from .sources import ImageRecord, ImageSource
from .splits import SubsetSource
from .study_files import MOS_CSV_COLUMNS, mos_key, read_mos_csv  # noqa: F401  (MOS_CSV_COLUMNS: re-exported)

log = logging.getLogger(__name__)

FIT_EXTENSIONS = (".jpg", ".jpeg", ".bmp", ".png")  # paq2piq_standalone.py img_files_in
# dataset.quality_score_size: the image PaQ-2-PiQ scores for the quality filter
#   full: the decoded image at full size (as the original study scored MIT Indoor)
#   eval: the image as evaluated (dataset.resize, then dataset.crop)
SCORE_SIZES = ("full", "eval")
CACHE_COLUMNS = ["image", "size", "mtime_ns", "scorer", "mos", "mos_normalized", "quality_category"]
SAVE_EVERY = 100  # batches
QualityLoader = Callable[[], tuple[PaQ2PiQ, WeightsIdentity]]


def check_categories(names: Sequence[str] | None) -> list[str] | None:
    """The chosen categories in canonical spelling (None: no filter); unknown names are a ConfigError."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    lookup = {c.lower(): c for c in CATEGORIES}
    unknown = [n for n in names if str(n).lower() not in lookup]
    if unknown or not names:
        raise ConfigError(f"Unknown quality categor{'y' if len(unknown) == 1 else 'ies'} {unknown}. "
                          f"Use names from {list(CATEGORIES)}, e.g. dataset.quality_filter=[Good,Excellent].")
    return [c for c in CATEGORIES if c.lower() in {str(n).lower() for n in names}]


def scorer_id(checkpoint: str | None, pretrained: bool, resize: int | None, crop: int | None) -> str:
    """What a cached score depends on besides the file: the weights and the image preparation."""
    return f"{checkpoint if pretrained else 'untrained'}|resize={resize}|crop={crop}"


def file_key(record: ImageRecord) -> tuple[str, int, int]:
    """(absolute path or id, size in bytes, mtime in ns): a cached score is valid while all three match."""
    if record.path is None:
        return record.image_id, 0, 0
    path = Path(record.path).resolve()
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


class QualityCache:
    """A CSV of scores, one row per (file, scorer), valid while the file's size and mtime are unchanged."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                for row in map(restore_row, csv.DictReader(fh)):
                    self.rows[(row["image"], row["scorer"])] = row

    def get(self, key: tuple[str, int, int], scorer: str) -> dict[str, str] | None:
        """The cached row for this file version and scorer, or None (absent, or the file changed since)."""
        row = self.rows.get((key[0], scorer))
        if row is None or (int(row["size"]), int(row["mtime_ns"])) != (key[1], key[2]):
            return None
        return row

    def put(self, key: tuple[str, int, int], scorer: str, mos: float, normalized: float, category: str) -> None:
        """Record a score; it replaces any older score of the same file by the same scorer."""
        self.rows[(key[0], scorer)] = {
            "image": key[0], "size": str(key[1]), "mtime_ns": str(key[2]), "scorer": scorer,
            "mos": "" if np.isnan(mos) else repr(float(mos)),
            "mos_normalized": "" if np.isnan(normalized) else repr(float(normalized)),
            "quality_category": category,
        }

    def save(self) -> None:
        buf = io.StringIO()
        writer = SafeDictWriter(buf, fieldnames=CACHE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows[k] for k in sorted(self.rows))
        atomic_write_text(self.path, buf.getvalue())


class _Prepared(Dataset):
    def __init__(self, source: ImageSource, indices: list[int], resize: int | None, crop: int | None) -> None:
        self.source, self.indices, self.resize, self.crop = source, indices, resize, crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        index = self.indices[i]
        try:
            image = prepare_image(self.source.load(self.source.records[index]), self.resize, self.crop)
        except Exception as exc:  # unreadable: recorded as unscored, never kept
            reraise_interrupt(exc)
            log.warning("Cannot score %s: %s", self.source.records[index].image_id, exc)
            return index, None
        return index, torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


@dataclass
class QualityScores:
    """Per-record raw MOS, normalised MOS and category ('' when the image could not be read)."""

    mos: list[float]
    mos_normalized: list[float]
    category: list[str]
    n_scored: int  # how many were computed now rather than read from the cache


@dataclass(frozen=True)
class ScoringOptions:
    """How the quality gate scores images: at which size (None: as decoded), in which batches, on which device."""

    resize: int | None = 256
    crop: int | None = 224
    batch_size: int = 32
    num_workers: int = 0
    device: str | torch.device | None = None  # None: CUDA when available


def score_source(source: ImageSource, quality: QualityLoader, cache_path: str | os.PathLike, scorer: str,
                 options: ScoringOptions | None = None, normalizer: ScoreNormalizer | None = None) -> QualityScores:
    """Score every image of `source`, reading what the cache has; the model is loaded only if needed."""
    options = options or ScoringOptions()
    normalizer = normalizer or ScoreNormalizer()
    cache = QualityCache(cache_path)
    keys = [file_key(r) for r in source.records]
    cached = [cache.get(k, scorer) for k in keys]
    todo = [i for i, row in enumerate(cached) if row is None]
    mos = [float(row["mos"]) if row and row["mos"] else float("nan") for row in cached]
    if todo:
        model, _ = quality()
        device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = model.to(device).eval()
        loader = DataLoader(_Prepared(source, todo, options.resize, options.crop), batch_size=options.batch_size,
                            num_workers=options.num_workers, collate_fn=list)
        log.info("Scoring %d images with PaQ-2-PiQ (%d cached)", len(todo), len(keys) - len(todo))
        with torch.no_grad(), progress_bar(len(todo), "PaQ-2-PiQ scores") as bar:
            for n_batch, batch in enumerate(loader, 1):
                groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
                for index, image in batch:
                    if image is None:
                        cache.put(keys[index], scorer, float("nan"), float("nan"), "")
                    else:
                        groups.setdefault(tuple(image.shape), []).append((index, image))
                for group in groups.values():
                    x = torch.stack([img for _, img in group]).to(device).float().div_(255.0)
                    scores = model(x)[:, 0].float().cpu()
                    norm = normalizer(scores)
                    for (index, _), s, n in zip(group, scores.tolist(), norm.tolist(), strict=True):
                        mos[index] = s
                        cache.put(keys[index], scorer, s, n, ScoreNormalizer.category(n))
                bar.update(len(batch))
                if n_batch % SAVE_EVERY == 0:  # an interrupted scoring run keeps what it has done
                    cache.save()
        cache.save()
    normalized = [float(normalizer(torch.tensor(m)).item()) if not np.isnan(m) else float("nan") for m in mos]
    return QualityScores(mos, normalized, [ScoreNormalizer.category(n) for n in normalized], len(todo))


def scores_from_mos_csv(source: ImageSource, path: str | os.PathLike) -> QualityScores:
    """Per record of `source`: raw MOS, normalised MOS and category as the study's mos.csv gives them.

    Rows are matched by `<class>/<file>`; an image without a row is an error (the study's dataset construction
    fails the same way), named in one line.
    """
    rows = read_mos_csv(path)
    mos, normalized, category = [], [], []
    for record in source.records:
        row = rows.get(mos_key(record.path or record.image_id))
        if row is None:
            raise DatasetError(f"{record.image_id} has no row in {path} (rows are matched by <class>/<file>). "
                               "Use the mos.csv written for this dataset, or unset dataset.quality_scores.")
        mos.append(row.global_score)
        normalized.append(row.normalized_global_score)
        category.append(row.category)
    return QualityScores(mos, normalized, category, 0)


def fit_files(folder: str | os.PathLike) -> list[Path]:
    """The files the study's adapt_from_dir scores: Path(folder).rglob('*.*') in that order, .jpg/.jpeg/.bmp/.png
    in any case."""
    return [f for f in Path(folder).rglob("*.*") if f.name.lower().endswith(FIT_EXTENSIONS) and f.is_file()]


def fit_normalizer(folder: str | os.PathLike, quality: QualityLoader, cache_path: str | os.PathLike | None,
                   scorer: str, device: str | torch.device | None = None) -> ScoreNormalizer:
    """quality.normalization.fit_dir: score every image of `folder` at full size (PIL convert("RGB"), as the
    study's default_loader) and fit the normalisation to the raw scores exactly as adapt_from_dir does.

    The fitted parameters are cached in a JSON file keyed by the folder's files (path, size, mtime) and the
    scorer, so a sweep fits once.
    """
    from PIL import Image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"quality.normalization.fit_dir='{folder}' is not a folder. Set it to a folder of images "
                          "(the study used CLIVE's Images/).")
    files = fit_files(folder)
    if not files:
        raise ConfigError(f"quality.normalization.fit_dir='{folder}' holds no {'/'.join(FIT_EXTENSIONS)} files.")
    listing = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([scorer, listing]).encode()).hexdigest()[:20]
    cache = Path(cache_path) if cache_path else None
    stored = json.loads(cache.read_text()) if cache is not None and cache.is_file() else {}
    name = f"fit:{folder}"
    if key in stored:
        normalizer = ScoreNormalizer(**{**stored[key]["params"], "name": name})
        log.info("Normalisation fitted on %s (cached in %s): peak %s, std_left %.6f, std_right %.6f",
                 folder, cache, normalizer.peak, normalizer.std_left, normalizer.std_right)
        return normalizer
    model, _ = quality()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    log.info("Fitting the score normalisation on %d images of %s", len(files), folder)
    scores = []
    with torch.no_grad():
        for f in files:
            with Image.open(f) as im:
                x = torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
            scores.append(float(model(x[None].to(device).float().div_(255.0))[0, 0]))
    normalizer = ScoreNormalizer.fit(scores, name=name)
    log.info("Normalisation fitted on %d images of %s: peak %s, std_left %.6f, std_right %.6f", len(files), folder,
             normalizer.peak, normalizer.std_left, normalizer.std_right)
    if cache is not None:
        params = {k: getattr(normalizer, k) for k in ("peak", "std_left", "std_right", "n_std", "clip_max")}
        stored[key] = {"folder": str(folder), "n_images": len(files), "scorer": scorer, "params": params}
        atomic_write_text(cache, strict_json(stored, indent=2) + "\n")
    return normalizer


def resolve_normalizer(options: dict[str, Any] | None, quality: QualityLoader, scorer: str,
                       device: str | torch.device | None = None) -> ScoreNormalizer:
    """quality.normalization: {name: study_defaults | fit | official, fit_dir: PATH, cache: PATH}.

    fit_dir implies name=fit; the quality model is loaded only when a fit is not in the cache.
    """
    options = dict(options or {})
    fit_dir = options.get("fit_dir")
    name = options.get("name") or ("fit" if fit_dir else "study_defaults")
    if name not in NORMALIZATIONS:
        raise ConfigError(f"quality.normalization.name={name!r} is not valid. Use one of: {', '.join(NORMALIZATIONS)}.")
    if fit_dir and name != "fit":
        raise ConfigError(f"quality.normalization.fit_dir is set but name={name}. Set quality.normalization.name=fit "
                          "(or drop fit_dir).")
    if name == "fit":
        if not fit_dir:
            raise ConfigError("quality.normalization.name=fit needs a folder. Set quality.normalization.fit_dir=PATH "
                              "(the study fitted on CLIVE's Images/).")
        return fit_normalizer(fit_dir, quality, options.get("cache"), scorer, device)
    return NORMALIZATIONS[name]


def filter_by_quality(source: ImageSource, scores: QualityScores, keep: Sequence[str]) -> SubsetSource:
    """The images whose category is one of `keep`."""
    return SubsetSource(source, [i for i, c in enumerate(scores.category) if c in set(keep)])


def category_counts(scores: QualityScores) -> dict[str, int]:
    """Images per category, Bad to Excellent, plus 'unreadable' when some could not be scored."""
    counts = Counter(scores.category)
    out = {c: counts.get(c, 0) for c in CATEGORIES}
    if counts.get(""):
        out["unreadable"] = counts[""]
    return out


def write_quality_report(folder: str | os.PathLike, counts: dict[str, int], keep: Sequence[str], n_kept: int,
                         scores: QualityScores, records: Sequence[ImageRecord]) -> None:
    """quality_filter.json (counts, kept), quality_scores.csv and the category histogram figure."""
    folder = Path(folder)
    report: dict[str, Any] = {"counts": counts, "keep": list(keep), "n_total": len(records), "n_kept": n_kept,
                              "n_scored_now": scores.n_scored}
    atomic_write_text(folder / "quality_filter.json", strict_json(report, indent=2) + "\n")
    buf = io.StringIO()
    writer = SafeWriter(buf, lineterminator="\n")
    writer.writerow(["image", "label", "mos", "mos_normalized", "quality_category", "kept"])
    for r, m, n, c in zip(records, scores.mos, scores.mos_normalized, scores.category, strict=True):
        writer.writerow([r.image_id, r.label, "" if np.isnan(m) else repr(m), "" if np.isnan(n) else repr(n), c,
                         int(c in keep)])
    atomic_write_text(folder / "quality_scores.csv", buf.getvalue())
    _histogram(folder / "quality_categories.png", counts, keep)


def _histogram(path: Path, counts: dict[str, int], keep: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(counts)
    bars = ax.bar(names, [counts[n] for n in names],
                  color=["tab:green" if n in keep else "tab:gray" for n in names])
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title(f"PaQ-2-PiQ categories (green: kept, {sum(counts[n] for n in keep)} of {sum(counts.values())})")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)
