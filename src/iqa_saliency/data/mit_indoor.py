"""MIT Indoor Scenes (67 classes), in either layout: the official archive's (<root>/Images/<class>/*.jpg, root
being the extracted folder or Images itself) or the original study's (<root>/<class>/*.jpg with its mos.csv
beside the class folders)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import DatasetError
from .sources import ImageFolder

N_CLASSES = 67
log = logging.getLogger(__name__)


class MITIndoor(ImageFolder):
    """The MIT Indoor Scenes images, labelled by their class folder."""

    def __init__(self, root: str | os.PathLike, decode: str = "oriented") -> None:
        if root is None or str(root) in ("", "???"):
            raise DatasetError("dataset=mit_indoor needs the extracted dataset. Set dataset.root=PATH to the folder "
                               "that holds Images/.")
        path = Path(root).expanduser()
        if (path / "Images").is_dir():
            path = path / "Images"
        super().__init__(path, decode=decode)
        if not self.class_names:
            raise DatasetError(f"'{path}' has no class folders. Set dataset.root to the folder that holds "
                               "Images/<class>/*.jpg (or <class>/*.jpg).")
        if len(self.class_names) != N_CLASSES:
            log.warning("MIT Indoor has %d classes; '%s' has %d.", N_CLASSES, path,
                                                len(self.class_names))
