"""Files and folders replaced whole: written beside their target under a unique temporary name, flushed
and fsynced, then renamed over it (a crash leaves the old version or the new one, never half of one);
the temporaries are removed after an error. Unique names let any number of writers work at once."""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yield a unique temporary path beside `target`; once the block has written it, it is fsynced and
    renamed over `target`. After an error the temporary is removed and `target` is untouched."""
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _unique_beside(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def swap_in(new: Path, target: Path) -> None:
    """Put the folder or file `new` at `target`; an old folder there is renamed aside first, then removed."""
    if new.is_dir() and target.exists():
        old = _unique_beside(target, "old")
        os.replace(target, old)
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(old, target)  # put the previous one back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


COMPLETE = ".complete"  # in a staging folder: everything is written and fsynced; only the swap remains


def _swap_entries(staging: Path, folder: Path) -> None:
    # Folders first, the files (export.json last) after: the description is replaced last.
    entries = sorted((p for p in staging.iterdir() if p.name != COMPLETE),
                     key=lambda p: (not p.is_dir(), p.name == "export.json", p.name))
    for entry in entries:
        swap_in(entry, folder / entry.name)
    fsync_dir(folder)


def recover_staged(folder: Path) -> None:
    """Finish what a crash interrupted in `folder`: a staging folder marked complete is swapped in (the
    entries it still holds; those already moved are in place), an unmarked one was never finished and
    is dropped, and folders renamed aside for a swap are removed. So after a crash mid-swap the next
    export or open rolls the new set forward: the set in place is always one export whole."""
    folder = Path(folder)
    for staging in sorted(folder.glob(".staging-*")):
        if (staging / COMPLETE).is_file():
            _swap_entries(staging, folder)
        shutil.rmtree(staging, ignore_errors=True)
    for old in folder.glob(".*.old-*"):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


@contextmanager
def staged_entries(folder: Path) -> Iterator[Path]:
    """Yield a fresh staging folder inside `folder`; what the block writes there is fsynced, marked
    complete and each entry swapped into `folder` (files renamed over, folders swapped whole). The
    caller holds the folder's export lock; an earlier crash's leftovers are recovered first."""
    folder = Path(folder)
    recover_staged(folder)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield staging
        fsync_tree(staging)
        marker = staging / COMPLETE
        marker.touch()
        fsync_file(marker)
        fsync_dir(staging)
        _swap_entries(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a fresh folder beside `target`; once the block has filled it, it is fsynced and swapped in
    as `target` whole (the previous `target` stays whole until then). Removed after an error."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        fsync_tree(staging)
        swap_in(staging, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
