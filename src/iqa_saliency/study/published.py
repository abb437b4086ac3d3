"""What the original study published: per-image values (its test_images/mos.csv files), the images they belong
to, and its dataset-level curves (read off its plots), each with the file it comes from."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UserError

STUDY_REPOSITORY = "github.com/dks2000dks/Saliency-Maps-NR-IQA-Classification-Models"
STUDY_COMMIT = "f028918"
# The two per-image sets: the repository's own (the kitchen image, 7 corruptions, severities 1-3) and the Report's
# (the buffet image, 4 corruptions, severities 1-2); image paths are relative to the mos.csv's folder's parent.
IMAGE_SETS = ("test_images/mos.csv", "Report/Images/test_images/mos.csv")
MOS_COLUMNS = ["image_path", "global_score", "category", "true_label", "pred_label", "probability"]
NO_PREDICTION = "No Prediction"
_PATH = re.compile(r"^test_images/severity=(-1|\d+)/(?:([a-z_]+)/)?([^/]+)\.png$")

# MIT Indoor Scenes' 67 class folders in ImageFolder's (sorted) order: the study's checkpoints' class indices.
MIT_INDOOR_CLASSES = (
    "airport_inside", "artstudio", "auditorium", "bakery", "bar", "bathroom", "bedroom", "bookstore", "bowling",
    "buffet", "casino", "children_room", "church_inside", "classroom", "cloister", "closet", "clothingstore",
    "computerroom", "concert_hall", "corridor", "deli", "dentaloffice", "dining_room", "elevator",
    "fastfood_restaurant", "florist", "gameroom", "garage", "greenhouse", "grocerystore", "gym", "hairsalon",
    "hospitalroom", "inside_bus", "inside_subway", "jewelleryshop", "kindergarden", "kitchen", "laboratorywet",
    "laundromat", "library", "livingroom", "lobby", "locker_room", "mall", "meeting_room", "movietheater", "museum",
    "nursery", "office", "operating_room", "pantry", "poolinside", "prisoncell", "restaurant", "restaurant_kitchen",
    "shoeshop", "stairscase", "studiomusic", "subway", "toystore", "trainstation", "tv_studio", "videostore",
    "waitingroom", "warehouse", "winecellar",
)


@dataclass(frozen=True)
class PublishedImage:
    """One row of a published mos.csv: an image (severity -1 is the saved clean crop) and its values."""

    source: str
    image_path: str
    severity: int
    corruption: str | None
    name: str
    global_score: float
    category: str
    true_label: str
    pred_label: str
    probability: float

    @property
    def item(self) -> str:
        """A short name for the table: 'kitchen clean (severity -1)', 'kitchen contrast s2', ..."""
        if self.corruption is None:
            return f"{self.name} severity {self.severity}"
        return f"{self.name} {self.corruption} s{self.severity}"


@dataclass(frozen=True)
class PublishedCurve:
    """One point of a dataset-level curve: top-1, top-5 or mean raw MOS of the validation split at a severity."""

    source: str
    corruption: str
    severity: int
    metric: str
    value: float
    resolution: float  # how precisely the value could be read off its figure


def parse_rows(rows: list[dict[str, str]], source: str) -> list[PublishedImage]:
    """PublishedImage rows from mos.csv records; a path the study's scripts would not write is a UserError."""
    out = []
    for r in rows:
        m = _PATH.match(r["image_path"])
        if not m:
            raise UserError(f"{source}: image_path {r['image_path']!r} is not test_images/severity=S[/corruption]/"
                            "NAME.png. Point --study at the study's repository folder.")
        out.append(PublishedImage(source, r["image_path"], int(m.group(1)), m.group(2), m.group(3),
                                  float(r["global_score"]), r["category"], r["true_label"], r["pred_label"],
                                  float(r["probability"])))
    return out


def read_mos_csv(study_dir: Path, image_set: str) -> list[PublishedImage]:
    """The rows of `<study_dir>/<image_set>` (a study-format test_images/mos.csv)."""
    path = study_dir / image_set
    if not path.is_file():
        raise UserError(f"'{path}' does not exist. Set --study to the study's repository folder (it holds "
                        f"{' and '.join(IMAGE_SETS)}).")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != MOS_COLUMNS:
            raise UserError(f"'{path}' has columns {reader.fieldnames}, not the study's {MOS_COLUMNS}. Point --study "
                            "at the study's repository folder.")
        return parse_rows(list(reader), image_set)


def _packaged(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath(name).read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def packaged_images(image_set: str) -> list[PublishedImage]:
    """The published rows of `image_set` as they are at the study's commit (published_images.csv)."""
    rows = [r for r in _packaged("published_images.csv") if r.pop("source") == image_set]
    return parse_rows(rows, image_set)


def packaged_curves() -> list[PublishedCurve]:
    """The study's dataset-level curves as read off its figures (published_curves.csv)."""
    return [PublishedCurve(r["source"], r["corruption"], int(r["severity"]), r["metric"], float(r["value"]),
                           float(r["resolution"])) for r in _packaged("published_curves.csv")]
