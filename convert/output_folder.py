"""Replace an output folder so that it always holds either the old folder or the complete new one.

The new folder is built in a hidden sibling `.<name>.converting-XXXXXXXX` and put in place in one step: on Linux
the two folders are exchanged atomically (renameat2 with RENAME_EXCHANGE), elsewhere by two renames (the old folder
goes to `.<name>.converting-XXXXXXXX.old` first). A run killed at any point leaves the output path with the old or
the new folder, plus at most a hidden sibling; `recover_interrupted_run` removes those siblings, and if a run was
killed between the two renames (output path missing, `.old` sibling present) it restores the old folder first.
"""

import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from transformers.utils import logging as hf_logging

logger = hf_logging.get_logger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
BACKUP_SUFFIX = ".old"


def temporary_prefix(output_dir: Path) -> str:
    return f".{output_dir.name}.converting-"


def _leftovers(output_dir: Path) -> list:
    """Hidden siblings of `output_dir` made by interrupted runs: `.<name>.converting-XXXXXXXX[.old]`."""
    if not output_dir.parent.is_dir():
        return []
    pattern = re.compile(re.escape(temporary_prefix(output_dir)) + r"[A-Za-z0-9_]{8}(\.old)?")
    return sorted(p for p in output_dir.parent.iterdir() if pattern.fullmatch(p.name))


def _remove(path: Path):
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def recover_interrupted_run(output_dir: Path):
    """Undo what a killed run left next to `output_dir`: restore the old folder if the run was killed between its
    two renames, and remove its temporary folders. Logs a warning for each action; OSError if one fails."""
    leftovers = _leftovers(output_dir)
    backups = [p for p in leftovers if p.name.endswith(BACKUP_SUFFIX) and p.is_dir() and not p.is_symlink()]
    if backups and not os.path.lexists(output_dir):
        if len(backups) > 1:
            raise OSError(errno.EEXIST, f"{output_dir} is missing and several interrupted runs left a previous "
                                        f"folder: {', '.join(map(str, backups))}; move the right one back by hand")
        backups[0].rename(output_dir)
        leftovers.remove(backups[0])
        logger.warning(f"Restored {output_dir} from {backups[0].name}: a previous run was killed while it replaced "
                       "this folder.")
    for path in leftovers:
        _remove(path)
        logger.warning(f"Removed {path}, left by a previous run that was killed before it finished.")


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def _finish_contents(folder: Path):
    """Give `folder` and its files the permissions of plainly created ones and flush them to disk."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.iterdir():
        os.chmod(file, 0o666 & ~umask)
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.chmod(folder, 0o777 & ~umask)
    _fsync_folder(folder)


def _fsync_folder(folder: Path):
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_folder(output_dir: Path, fill):
    """Call `fill(folder)` on a new hidden sibling of `output_dir`, then put that folder at `output_dir`, replacing
    the folder there (the caller has checked it may be replaced). `fill` must write files only, no subfolders;
    `output_dir` must be free of symlinks (resolved).

    On a failure nothing is left behind (no temporary folder, no parent created here) and `output_dir` is as before.
    """
    created = [p for p in output_dir.parents if not p.exists()]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(output_dir), dir=output_dir.parent))
    backup = tmp.with_name(tmp.name + BACKUP_SUFFIX)
    in_place = False
    try:
        fill(tmp)
        _finish_contents(tmp)
        if not output_dir.exists():
            tmp.rename(output_dir)
        elif not _exchange(tmp, output_dir):  # on success tmp holds the old folder
            output_dir.rename(backup)
            tmp.rename(output_dir)  # a kill just before this line is undone by recover_interrupted_run
        in_place = True
        _fsync_folder(output_dir.parent)
    except BaseException:
        if not in_place:
            shutil.rmtree(tmp, ignore_errors=True)
            if backup.is_dir() and not os.path.lexists(output_dir):
                backup.rename(output_dir)
            for folder in created:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    old = backup if backup.exists() else tmp
    if not old.exists():
        return
    try:
        shutil.rmtree(old)
    except OSError as error:
        logger.warning(f"The new folder is in place at {output_dir}, but the previous one, moved to {old}, could not "
                       f"be removed ({error}); delete it by hand.")
