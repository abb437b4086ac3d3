"""The folder walk on trees whose listing is known by construction: nested folders in name order, which names and
links are images, and the exact reason each unusable entry reaches skipped.csv with (data/walk.py's contract)."""

from __future__ import annotations

import os
from pathlib import Path

from iqa_saliency.data.walk import FolderWalker

EXTS = (".png", ".jpg")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the walk reads names and links only
    return path


def _walker(root: Path) -> FolderWalker:
    walker = FolderWalker(root, EXTS)
    for child in sorted(root.iterdir()):  # as ImageFolder admits its class folders
        assert walker.enter_dir(child) is None
    return walker


def test_nested_folders_in_name_order_with_their_images_only(tmp_path):
    root = tmp_path / "data"
    for rel in ("cat/b.png", "cat/a.JPG", "cat/sub/deeper/c.png", "cat/sub/d.jpg", "cat/zz/e.png", "cat/notes.txt",
                "cat/sub/thumbs.db"):
        _touch(root / rel)
    listing = _walker(root).walk(root / "cat")
    # name order per folder, a subfolder's images where its name sorts: a.JPG, b.png, notes.txt, sub/..., zz/...
    assert [p.relative_to(root).as_posix() for p in listing.images] == [
        "cat/a.JPG", "cat/b.png", "cat/sub/d.jpg", "cat/sub/deeper/c.png", "cat/zz/e.png"]
    assert listing.unusable == {}


def test_links_inside_the_root_are_followed_once(tmp_path):
    root = tmp_path / "data"
    _touch(root / "cat" / "a.png")
    for name in ("b.png", "c.png", "notes.txt"):
        _touch(root / "dog" / name)
    os.symlink("../dog/b.png", root / "cat" / "alias.png")  # listed here first: dog's own file is then the repeat
    os.symlink("../dog/c.png", root / "cat" / "picture")  # a link without an image name, to an image: listed
    os.symlink("a.png", root / "cat" / "same.png")  # a.png again
    os.symlink("../dog/notes.txt", root / "cat" / "shown.png")  # an image name on the link: listed (decoded later)
    os.symlink("../dog/notes.txt", root / "cat" / "notes")  # neither name is an image's: not listed, not reported
    walker = _walker(root)
    cat, dog = walker.walk(root / "cat"), walker.walk(root / "dog")
    repeat = "the same file as an image listed already (symbolic link)"
    assert [p.name for p in cat.images] == ["a.png", "alias.png", "picture", "shown.png"]
    assert cat.unusable == {root / "cat" / "same.png": repeat}
    assert dog.images == [] and dog.unusable == {root / "dog" / "b.png": repeat, root / "dog" / "c.png": repeat}


def test_unusable_entries_and_their_exact_reasons(tmp_path):
    root = tmp_path / "data"
    _touch(root / "cat" / "a.png")
    outside = _touch(tmp_path / "elsewhere" / "o.png")
    os.symlink("missing.png", root / "cat" / "broken.png")
    os.symlink("loop_b.png", root / "cat" / "loop_a.png")
    os.symlink("loop_a.png", root / "cat" / "loop_b.png")
    os.symlink(outside, root / "cat" / "out.png")
    os.symlink(".", root / "cat" / "self")  # one link back into a listed folder
    listing = _walker(root).walk(root / "cat")
    assert [p.name for p in listing.images] == ["a.png"]
    assert listing.unusable == {
        root / "cat" / "broken.png": "broken symbolic link",
        root / "cat" / "loop_a.png": "symbolic link loop",
        root / "cat" / "loop_b.png": "symbolic link loop",
        root / "cat" / "out.png": f"symbolic link to {os.path.realpath(outside)}, outside the dataset root",
        root / "cat" / "self": "symbolic link loop (a folder already listed)",
    }


def test_a_folder_admitted_twice_or_unreadable(tmp_path):
    root = tmp_path / "data"
    _touch(root / "cat" / "a.png")
    walker = FolderWalker(root, EXTS)
    assert walker.enter_dir(root / "cat") is None
    assert walker.enter_dir(root / "cat") == "folder already listed"
    gone = walker.walk(root / "gone")
    assert gone.images == [] and gone.unusable == {root / "gone": "unreadable folder (No such file or directory)"}


def test_a_root_whose_name_ends_in_a_space_keeps_its_inside_links(tmp_path):
    # inside means under the root's own path: the trailing space is part of the name, not padding
    root = tmp_path / "data "
    _touch(root / "cat" / "a.png")
    _touch(tmp_path / "data" / "cat" / "x.png")  # a sibling whose name is the root's without the space
    os.symlink("../dog/b.png", root / "cat" / "c.png")
    _touch(root / "dog" / "b.png")
    os.symlink(tmp_path / "data" / "cat" / "x.png", root / "cat" / "d.png")
    listing = _walker(root).walk(root / "cat")
    assert [p.name for p in listing.images] == ["a.png", "c.png"]
    assert listing.unusable == {root / "cat" / "d.png": f"symbolic link to {tmp_path / 'data' / 'cat' / 'x.png'}, "
                                                        "outside the dataset root"}


def test_an_entry_whose_type_cannot_be_read_is_not_walked_as_a_folder(tmp_path, monkeypatch):
    # Path.is_dir swallows ELOOP itself; other errors (EACCES on a link's target, which root never meets) reach
    # the walk's own guard: such an entry is treated as a file, never entered
    root = tmp_path / "data"
    _touch(root / "cat" / "a.png")
    _touch(root / "cat" / "locked.png")
    is_dir = Path.is_dir

    def refusing(self: Path) -> bool:
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied")
        return is_dir(self)

    monkeypatch.setattr(Path, "is_dir", refusing)
    listing = _walker(root).walk(root / "cat")
    assert [p.name for p in listing.images] == ["a.png", "locked.png"] and listing.unusable == {}
