"""Atomic file writes: the one helper every writer of this package uses.

A file is written under a hidden temporary name beside its destination, ``.NAME.<pid>.<random>.part``,
and renamed onto the destination only when complete (``os.replace``, atomic on POSIX and Windows within
one filesystem). An interruption leaves the destination untouched; the temporary name records the
process that owns it, so :func:`stale_temporaries` can tell a live run's file from one a dead run left.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _folder(dest: Path) -> Path:
    return dest.parent if str(dest.parent) else Path(".")


@contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on a clean exit it replaces ``dest``, on any exception
    (Ctrl-C included) it is removed and ``dest`` is left as it was."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=_folder(dest), prefix=f".{dest.name}.{os.getpid()}.", suffix=".part")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically; returns ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temporaries(dest: str | Path) -> list[Path]:
    """Temporary files of :func:`atomic_path` for ``dest`` whose owning process no longer runs (left by a
    hard kill); files of live processes, and names this module did not make, are never listed."""
    dest = Path(dest)
    found = []
    for tmp in _folder(dest).glob(f".{dest.name}.*.part"):
        pid = tmp.name[len(dest.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(tmp)
    return found
