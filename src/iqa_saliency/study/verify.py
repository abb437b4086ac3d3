"""`iqa-study verify`: compares this project with every value the original study published.

(1) The published corrupted images, re-made here from the published clean one (imagecorruptions on the uint8
pixels, centre crop 224, as the study's `generate_corrupted_images` did) and compared pixel for pixel.
(2) The raw PaQ-2-PiQ MOS of each published image against its `global_score`, its category, and with the study's
checkpoint its predicted label and probability (the study's come from one pass with dropout on; they are compared
with the range of many dropout-on passes here).
(3) With MIT Indoor: validation position 5 of the study's split is the published clean image, and with a finished
`+experiment=original_study` sweep its curves next to the study's plots.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..corruption import apply_corruption
from ..data.images import prepare_image
from ..errors import UserError
from .published import IMAGE_SETS, MIT_INDOOR_CLASSES, NO_PREDICTION, PublishedImage, packaged_images, read_mos_csv
from .table import EXPLAINED, FAIL, NOT_RUN, PASS, Row, fmt

log = logging.getLogger(__name__)

CROP = 224  # the study's CenterCrop
VAL_POSITION = 5  # utils.py Save_Images: Dataset.__getitem__(i + 5), i = 0


@dataclass(frozen=True)
class VerifyOptions:
    """What `iqa-study verify` compares, and with what."""

    study: Path
    paq2piq: Path | None
    out: Path
    mit_indoor: Path | None = None
    checkpoint: Path | None = None
    sweep: Path | None = None
    clive: Path | None = None
    image_set: str = IMAGE_SETS[0]
    mos_tolerance: float = 0.01
    dropout_passes: int = 2000
    seed: int = 0


def check_options(o: VerifyOptions) -> None:
    """Raise a UserError naming the fix for a missing path or a bad setting, before any heavy work."""
    if not o.study.is_dir():
        raise UserError(f"--study '{o.study}' is not a folder. Set it to a clone of the study's repository.")
    if o.image_set not in IMAGE_SETS:
        raise UserError(f"--images {o.image_set!r} is not a published set. Use one of: {', '.join(IMAGE_SETS)}.")
    if o.paq2piq is not None and not o.paq2piq.is_file():
        raise UserError(f"--paq2piq '{o.paq2piq}' is not a file. Set it to RoIPoolModel-fit.10.bs.120.pth (the study's "
                        "models/RoIPoolModel.pth).")
    for flag, path in (("--mit-indoor", o.mit_indoor), ("--sweep", o.sweep), ("--clive", o.clive)):
        if path is not None and not path.is_dir():
            raise UserError(f"{flag} '{path}' is not a folder. Fix the path or leave {flag} out.")
    if o.checkpoint is not None and not o.checkpoint.is_file():
        raise UserError(f"--checkpoint '{o.checkpoint}' is not a file. Set it to the study's best_model.ckpt or leave "
                        "it out.")
    if o.sweep is not None and not (o.sweep / "summary.csv").is_file():
        raise UserError(f"--sweep '{o.sweep}' has no summary.csv. Point it at a finished +experiment=original_study "
                        "sweep folder (python -m iqa_saliency.report FOLDER writes the file).")
    if not o.mos_tolerance > 0:
        raise UserError(f"--mos-tolerance {o.mos_tolerance} must be positive, e.g. --mos-tolerance 0.01.")
    if o.dropout_passes < 100:
        raise UserError(f"--dropout-passes {o.dropout_passes} is too few to bound a dropout pass. Use 100 or more.")


def read_png(path: Path) -> np.ndarray:
    """A published PNG's pixels, HxWx3 uint8: what the study's `np.uint8(255 * pimg.imread(png))` gives (matplotlib
    reads 8-bit PNG as float32 v/255, which that cast maps back to v exactly)."""
    if not path.is_file():
        raise UserError(f"'{path}' is missing. Set --study to a complete clone of the study's repository.")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def pixel_row(check: str, item: str, study: np.ndarray, here: np.ndarray, source: str, explained: str = "") -> Row:
    """Two images compared pixel for pixel: pass when identical; `explained` says why a difference is expected."""
    if study.shape != here.shape:
        return Row(check, item, f"{study.shape[1]}x{study.shape[0]}", f"{here.shape[1]}x{here.shape[0]}", "size",
                   FAIL, source, explained)
    differ = np.any(study != here, axis=-1)
    worst = int(np.abs(study.astype(np.int16) - here.astype(np.int16)).max())
    n = int(differ.sum())
    verdict = PASS if n == 0 else (EXPLAINED if explained else FAIL)
    return Row(check, item, "published PNG", "re-made here", f"{n} of {differ.size} pixels differ, max {worst}",
               verdict, source, explained if n else "")


def remake(clean: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """The study's generate_corrupted_images on the clean crop: corrupt the uint8 pixels, centre-crop 224."""
    out = apply_corruption(clean, corruption, severity, seed)
    return np.asarray(prepare_image(Image.fromarray(out), None, CROP, small="pad"))


def is_random(clean: np.ndarray, corruption: str, severity: int) -> bool:
    """True when the corruption draws random numbers (two seeds give different images): the study never seeded."""
    return not np.array_equal(remake(clean, corruption, severity, 1), remake(clean, corruption, severity, 2))


class Verifier:
    """Runs the checks of one `iqa-study verify` call and collects their rows."""

    def __init__(self, options: VerifyOptions) -> None:
        self.o = options
        self.rows: list[Row] = []
        self.published = read_mos_csv(options.study, options.image_set)
        self.base = (options.study / options.image_set).parent.parent
        self.source = options.image_set
        self.images = {p.image_path: read_png(self.base / p.image_path) for p in self.published}
        clean = [p for p in self.published if p.severity == -1]
        if len(clean) != 1:
            raise UserError(f"{self.source} has {len(clean)} clean (severity=-1) rows, not one. Point --study at the "
                            "study's repository folder.")
        self.clean_row = clean[0]
        self.clean = self.images[self.clean_row.image_path]
        self.class_names: list[str] | None = None

    def run(self) -> list[Row]:
        """Every check the inputs allow, in table order."""
        self.check_file_identity()
        self.check_images()
        self.check_quality()
        if self.o.mit_indoor is not None:
            self.check_dataset()
        if self.o.checkpoint is not None:
            self.check_classifier()
        self.check_curves()
        return self.rows

    # ---------------------------------------------------------------------------------------------- (0) the file
    def check_file_identity(self) -> None:
        """Whether the folder's mos.csv is the one of the study's commit the project packages."""
        packaged = packaged_images(self.source)
        same = packaged == self.published
        self.rows.append(Row("published file", self.source, "commit f028918", "the --study folder's", "" if same else
                             "values differ", PASS if same else EXPLAINED, "iqa_saliency/study/published_images.csv",
                             "" if same else "not the file of the study's commit f028918: its own values are compared"))

    # ----------------------------------------------------------------------------------------- (1) the images
    def check_images(self) -> None:
        """Each published image against the one re-made here from the published clean crop."""
        for p in self.published:
            if p.severity == -1:
                continue
            study = self.images[p.image_path]
            if p.severity == 0:
                self.rows.append(pixel_row("image", p.item, study, self.clean, p.image_path))
                continue
            here = remake(self.clean, p.corruption, p.severity, self.o.seed)
            note = ""
            if is_random(self.clean, p.corruption, p.severity):
                note = f"{p.corruption} draws random numbers and the study never seeded them: not repeatable"
            self.rows.append(pixel_row("image", p.item, study, here, p.image_path, note))

    # ---------------------------------------------------------------------------------- (2) MOS and category
    def check_quality(self) -> None:
        """Raw MOS of each published image against global_score, then the category."""
        from ..data.quality_filter import resolve_normalizer
        from ..models.paq2piq import ScoreNormalizer, load_paq2piq

        if self.o.paq2piq is None:
            self.rows.append(Row("MOS", "all", self.source, "", "", NOT_RUN, self.source,
                                 "give --paq2piq RoIPoolModel-fit.10.bs.120.pth to score the published images"))
            return
        model, ident = load_paq2piq(str(self.o.paq2piq), download=False)
        scores = {}
        with torch.no_grad():
            for p in self.published:
                x = torch.from_numpy(self.images[p.image_path].copy()).permute(2, 0, 1)[None].float().div(255.0)
                scores[p.image_path] = float(model(x)[0, 0])
        for p in self.published:
            diff = scores[p.image_path] - p.global_score
            ok = abs(diff) <= self.o.mos_tolerance
            self.rows.append(Row("MOS", p.item, fmt(p.global_score), fmt(scores[p.image_path]), f"{diff:+.2g}",
                                 PASS if ok else FAIL, self.source, "" if ok else
                                 f"tolerance {self.o.mos_tolerance} (--mos-tolerance)"))
        options = {"fit_dir": str(self.o.clive)} if self.o.clive else None
        normalizer = resolve_normalizer(options, lambda: (model, ident), ident.name)
        for p in self.published:
            here = ScoreNormalizer.category(float(normalizer(torch.tensor(scores[p.image_path], dtype=torch.float64))))
            note = ""
            verdict = PASS if here == p.category else FAIL
            if verdict == FAIL and self.o.clive is None:
                verdict, note = EXPLAINED, ("the study's categories come from a normalisation fitted on CLIVE and "
                                            "never saved (docs/reproducing-the-study.md, difference 6): "
                                            "--clive DIR re-fits it")
            self.rows.append(Row("category", p.item, p.category, f"{here} ({normalizer.name})", "" if here ==
                                 p.category else "differs", verdict, self.source, note))

    # --------------------------------------------------------------------------------------- (3) the dataset
    def check_dataset(self) -> None:
        """Validation position 5 of the study's split is the published clean crop, of the published class."""
        from ..data.mit_indoor import MITIndoor
        from ..data.splits import study_split

        source = MITIndoor(self.o.mit_indoor, decode="imagefolder")
        self.class_names = list(source.class_names)
        _, val = study_split(source.records)
        item = f"val position {VAL_POSITION}"
        if len(val) <= VAL_POSITION:
            self.rows.append(Row("dataset", item, self.clean_row.name, f"{len(val)} val images", "", FAIL,
                                 self.clean_row.image_path, "the split has no position 5"))
            return
        record = source.records[val[VAL_POSITION]]
        here = np.asarray(prepare_image(source.load(record), None, CROP, small="pad"))
        note = ""
        if self.source != IMAGE_SETS[0]:
            note = "the Report's set comes from an earlier run of the study (its image is buffet, not kitchen)"
        row = pixel_row("dataset", f"{item} = {self.clean_row.image_path}", self.clean, here,
                        self.clean_row.image_path, note)
        self.rows.append(Row(row.check, row.item, row.study, record.image_id, row.difference, row.verdict,
                             row.source, row.note))
        label = self.class_names[record.label]
        self.rows.append(Row("dataset", f"{item} class", self.clean_row.true_label, label, "" if label ==
                             self.clean_row.true_label else "differs", PASS if label == self.clean_row.true_label else
                             (EXPLAINED if note else FAIL), self.source, note if label != self.clean_row.true_label
                             else ""))

    # ------------------------------------------------------------------------------------------ classifier
    def check_classifier(self) -> None:
        """Predicted label and probability of each published image (the study's: one pass with dropout on)."""
        from ..models.classifier import load_study_classifier

        clf = load_study_classifier(str(self.o.checkpoint))
        net = clf.model.net
        names = self.class_names
        if names is None:
            if clf.num_classes != len(MIT_INDOOR_CLASSES):
                raise UserError(f"--checkpoint has {clf.num_classes} classes, not MIT Indoor's 67: their names are "
                                "unknown. Give --mit-indoor, the dataset it was trained on.")
            names = list(MIT_INDOOR_CLASSES)
        if len(names) != clf.num_classes:
            raise UserError(f"--checkpoint has {clf.num_classes} classes, --mit-indoor {len(names)}. Give the "
                            "checkpoint trained on that dataset.")
        label0 = next((p.pred_label for p in self.published if p.severity == 0), None)
        passes = self.o.dropout_passes
        gen_seed = self.o.seed
        for p in self.published:
            if p.pred_label == NO_PREDICTION:
                continue
            x = torch.from_numpy(self.images[p.image_path].copy()).permute(2, 0, 1)[None].float().div(255.0)
            with torch.no_grad():
                feats = torch.flatten(net.ResNet_Module(x), 1)
                prob_off = F.softmax(net.fc(feats), dim=1)[0]
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(gen_seed)
                    dropped = F.dropout(feats.expand(passes, -1), net.dropout.p, training=True)
                probs_on = F.softmax(net.fc(dropped), dim=1)
            p_off, i_off = (float(v) for v in prob_off.max(0))
            label_off = names[int(i_off)]
            p_on, i_on = probs_on.max(1)
            labels_on = Counter(names[int(i)] for i in i_on)
            self.rows.append(self._label_row(p, label_off, labels_on, label0))
            lo, hi, med = float(p_on.min()), float(p_on.max()), float(p_on.median())
            ok = lo <= p.probability <= hi
            self.rows.append(Row(
                "probability", p.item, fmt(p.probability, 4),
                f"{p_off:.4f} dropout off; dropout on {lo:.4f}-{hi:.4f}, median {med:.4f}",
                f"{p.probability - p_off:+.2g} vs dropout off", PASS if ok else FAIL, self.source,
                f"the study's is one pass with dropout on (models.py): must lie within {passes} such passes here"))

    def _label_row(self, p: PublishedImage, label_off: str, labels_on: Counter, label0: str | None) -> Row:
        share = labels_on[p.pred_label] / sum(labels_on.values())
        here = f"{label_off} (dropout off); {p.pred_label} in {share:.0%} of dropout-on passes"
        if p.severity > 0:
            verdict = EXPLAINED if p.pred_label == label0 else FAIL
            return Row("predicted label", p.item, p.pred_label, here, "", verdict, self.source,
                       "estimate_quality.py assigns pred_labe (a typo) for severities 1-3, so its pred_label column "
                       "repeats severity 0's label; not comparable")
        if p.pred_label == label_off:
            return Row("predicted label", p.item, p.pred_label, here, "", PASS, self.source)
        verdict = EXPLAINED if share > 0 else FAIL
        return Row("predicted label", p.item, p.pred_label, here, "differs", verdict, self.source,
                   "the study predicted with dropout on: a label some dropout-on passes here also give")

    # ------------------------------------------------------------------------------------------------ curves
    def check_curves(self) -> None:
        """The study's dataset-level curves next to a finished original_study sweep's summary.csv."""
        from .curves import curve_rows

        if self.o.sweep is None:
            if self.o.mit_indoor is not None:
                self.rows.append(Row("curve", "all", "published_curves.csv", "", "", NOT_RUN, "plots/*.png",
                                     "run the original_study sweep (docs/reproducing-the-study.md), "
                                     "then give --sweep FOLDER"))
            return
        self.rows.extend(curve_rows(self.o.sweep / "summary.csv"))


def verify(options: VerifyOptions) -> list[Row]:
    """All rows of the verification table (check_options first)."""
    check_options(options)
    return Verifier(options).run()
