"""Listing an image folder safely: symbolic links followed once, loops and links leaving the root reported.

A folder or file reached twice (a link to `.`, to a parent, or to something listed already), a link whose target
lies outside the dataset root, a broken link and a link loop are never listed as images: each is returned with
the reason, so the run lists it in skipped.csv instead of repeating images or dropping them silently.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Listing:
    """What a walk found: image files (paths as reached, links not resolved) and entries that cannot be used."""

    images: list[Path] = field(default_factory=list)
    unusable: dict[Path, str] = field(default_factory=dict)


class FolderWalker:
    """Walks folders of one dataset root, remembering every real folder and file already listed."""

    def __init__(self, root: Path, extensions: tuple[str, ...]) -> None:
        self.root = root
        self.root_real = os.path.realpath(root)
        self.exts = extensions
        self.seen_dirs = {self.root_real}
        self.seen_files: set[str] = set()

    def is_image_name(self, path: Path) -> bool:
        return path.suffix.lower() in self.exts

    def _inside(self, real: str) -> bool:
        return real == self.root_real or real.startswith(self.root_real.rstrip(os.sep) + os.sep)

    def check_link(self, path: Path) -> tuple[str | None, str | None]:
        """(resolved target, None) for a usable link, or (None, reason)."""
        try:
            os.stat(path)
        except OSError as exc:
            return None, ("symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link")
        real = os.path.realpath(path)
        if not self._inside(real):
            return None, f"symbolic link to {real}, outside the dataset root"
        return real, None

    def enter_dir(self, path: Path) -> str | None:
        """None when `path` (a folder or a link to one) may be walked, else why not; marks it walked."""
        real = os.path.realpath(path)
        if path.is_symlink():
            _, reason = self.check_link(path)
            if reason:
                return reason
        if real in self.seen_dirs or self.root_real.startswith(real.rstrip(os.sep) + os.sep):
            return "symbolic link loop (a folder already listed)" if path.is_symlink() else "folder already listed"
        self.seen_dirs.add(real)
        return None

    def add_file(self, path: Path, listing: Listing) -> None:
        """List an image file (following a link once); report a link that cannot be used, or a duplicate."""
        if not self.is_image_name(path) and not path.is_symlink():
            return
        if path.is_symlink():
            real, reason = self.check_link(path)
            if reason:
                listing.unusable[path] = reason
                return
            if not self.is_image_name(path) and not self.is_image_name(Path(real)):
                return
        else:
            real = os.path.realpath(path)
        if real in self.seen_files:
            listing.unusable[path] = "the same file as an image listed already (symbolic link)"
            return
        self.seen_files.add(real)
        listing.images.append(path)

    def walk(self, folder: Path, listing: Listing | None = None) -> Listing:
        """Every image under `folder` (which enter_dir has admitted), in name order."""
        listing = listing if listing is not None else Listing()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            listing.unusable[folder] = f"unreadable folder ({exc.strerror})"
            return listing
        for entry in entries:
            path = Path(entry.path)
            if _is_dir(path):
                reason = self.enter_dir(path)
                if reason:
                    listing.unusable[path] = reason
                else:
                    self.walk(path, listing)
            else:
                self.add_file(path, listing)
        return listing


def _is_dir(path: Path) -> bool:
    """A folder, or a link that is (or looks like, being a loop) a link to one."""
    try:
        return path.is_dir()
    except OSError:  # ELOOP on some systems
        return False
