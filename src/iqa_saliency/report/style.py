"""How the sweep report writes its figures (report.format, report.dpi): light, so a config check imports no
plotting library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

FIGURE_FORMATS = ("png", "pdf", "svg")


@dataclass(frozen=True)
class FigureStyle:
    """How the report's figures are written: file format, resolution and font sizes readable at column width."""

    format: str = "png"
    dpi: int = 150
    font_size: float = 10.0

    def __post_init__(self) -> None:
        if self.format not in FIGURE_FORMATS:
            raise ConfigError(f"report.format={self.format!r} is not valid. Use one of: {', '.join(FIGURE_FORMATS)}.")
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or self.dpi < 1:
            raise ConfigError(f"report.dpi={self.dpi!r} is not valid. Use a whole number of dots per inch >= 1.")

    @classmethod
    def from_config(cls, node: Any) -> FigureStyle:
        """The style from a `report` config node (`format`, `dpi`; defaults where absent); ConfigError if bad."""
        node = node or {}
        return cls(format=node.get("format", "png"), dpi=node.get("dpi", 150))

    def path(self, folder: Path, stem: str) -> Path:
        """The file of figure `stem` in `folder`, with this style's extension."""
        return folder / f"{stem}.{self.format}"

    def rc(self) -> dict[str, Any]:
        """matplotlib settings for the report's figures."""
        return {"font.size": self.font_size, "axes.titlesize": self.font_size + 1, "axes.labelsize": self.font_size,
                "xtick.labelsize": self.font_size - 1, "ytick.labelsize": self.font_size - 1,
                "legend.fontsize": self.font_size - 2, "savefig.dpi": self.dpi}


DEFAULT_STYLE = FigureStyle()


@dataclass(frozen=True)
class StudyFigures:
    """The original study's figure set (report.study_figures=true): for one image, per corruption at `severity`,
    the corrupted image, PaQ-2-PiQ's local map over it and the attribution over it. `image`: an image id, or an
    int, the image's position in the dataset (per_image.csv `index`; the study used val position 5)."""

    enabled: bool = False
    image: str | int = 5
    severity: int = 2

    @classmethod
    def from_config(cls, node: Any) -> StudyFigures:
        """From a `report` config node (`study_figures`, `study_image`, `study_severity`)."""
        node = node or {}
        severity = node.get("study_severity", 2)
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
            raise ConfigError(f"report.study_severity={severity!r} is not valid. Use a severity from 1 to 5.")
        return cls(bool(node.get("study_figures", False)), node.get("study_image", 5), severity)


def untrained_mark(summaries: list[dict[str, Any]]) -> str | None:
    """The warning every report figure carries when any cell ran a model on untrained weights, else None."""
    from ..models.resolution import ROLE_NAMES

    roles = [role for role in ROLE_NAMES
             if any(((s.get("weights") or {}).get(role) or {}).get("untrained") for s in summaries)]
    if not roles:
        return None
    return f"UNTRAINED weights ({', '.join(ROLE_NAMES[r] for r in roles)}): no learned behaviour"
