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
