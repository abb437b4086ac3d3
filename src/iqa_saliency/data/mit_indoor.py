"""MIT Indoor Scenes (67 classes), in either layout: the official archive's (<root>/Images/<class>/*.jpg, root
being the extracted folder or Images itself) or the original study's (<root>/<class>/*.jpg with its mos.csv
beside the class folders).

The images are listed exactly as torchvision's `ImageFolder(root).samples` lists them (the study's listing, and
the order its train/val split is drawn over): every sub-folder is a class, hidden ones included, in sorted order;
files below each class by `sorted(os.walk(...))`, then by name; only torchvision's image extensions, compared
case-insensitively (no .gif). A class folder without images stops the run, as it stops ImageFolder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..errors import DatasetError
from .images import DECODE_MODES, check_choice
from .sources import ImageFolder, ImageRecord

N_CLASSES = 67
log = logging.getLogger(__name__)


def imagefolder_samples(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, (path, class index) samples) as torchvision's ImageFolder(root) finds them."""
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError:
        raise DatasetError(f"'{root}' has no class folders. Set dataset.root to the folder that holds "
                           "Images/<class>/*.jpg (or <class>/*.jpg).") from None
    samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    empty = sorted(set(classes) - {classes[label] for _, label in samples})
    if empty:
        raise DatasetError(f"Class folder(s) {', '.join(repr(c) for c in empty)} under '{root}' hold no image "
                           f"({', '.join(IMG_EXTENSIONS)}); torchvision's ImageFolder, which the study used, refuses "
                           "that. Remove those folders or add their images.")
    return classes, samples


class MITIndoor(ImageFolder):
    """The MIT Indoor Scenes images, labelled by their class folder, in ImageFolder's order."""

    def __init__(self, root: str | os.PathLike, decode: str = "oriented") -> None:
        if root is None or str(root) in ("", "???"):
            raise DatasetError("dataset=mit_indoor needs the extracted dataset. Set dataset.root=PATH to the folder "
                               "that holds Images/.")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DatasetError(f"Dataset root '{path}' does not exist. Set dataset.root to the extracted MIT Indoor "
                               "folder.")
        if (path / "Images").is_dir():
            path = path / "Images"
        self.decode = check_choice("dataset.decode", decode, DECODE_MODES)
        self.root = path
        self.unusable = {}
        self.class_names, samples = imagefolder_samples(path)
        self.records = [ImageRecord(Path(os.path.relpath(p, path)).as_posix(), label, p) for p, label in samples]
        if len(self.class_names) != N_CLASSES:
            log.warning("MIT Indoor has %d classes; '%s' has %d.", N_CLASSES, path, len(self.class_names))
