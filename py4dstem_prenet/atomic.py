"""Atomic file writes: the one helper every writer of this package uses.

A file is written under a hidden temporary name beside its destination, ``.NAME.HOST.PID.RANDOM.part``
(the machine and process that own it), and moved onto the destination only when complete. An
interruption leaves the destination untouched. Before a new write, temporary files of the same
destination left by a process of this host that is no longer alive (a hard kill) are removed; those of
live processes (a concurrent run onto the same output) and of other hosts (a shared disk) are left alone.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _folder(dest: Path) -> Path:
    return dest.parent if str(dest.parent) else Path(".")


def host() -> str:
    """This machine's name, safe inside a file name."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def stale_temporaries(dest: str | Path) -> list[Path]:
    """Temporary files of :func:`atomic_path` for ``dest`` whose owning process, on this host, no longer runs."""
    dest = Path(dest)
    found = []
    for tmp in _folder(dest).glob(f".{dest.name}.*.part"):
        parts = tmp.name[len(dest.name) + 2:].split(".")
        if len(parts) == 4 and parts[0] == host() and parts[1].isdigit() and not _alive(int(parts[1])):
            found.append(tmp)
    return found


def _publish(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``dest``: replacing it with ``overwrite``, else only if ``dest`` still
    does not exist (a hard link is atomic and fails if a concurrent writer made it meanwhile)."""
    taken = FileExistsError(f"{dest} was written by another run while this one ran; pass --overwrite "
                            "(overwrite=True) to replace it")
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise taken from None
    except OSError:  # a file system without hard links: the check and the rename are then not atomic
        if dest.exists():
            raise taken from None
        os.replace(tmp, dest)
        return
    tmp.unlink()


@contextmanager
def atomic_path(dest: str | Path, *, overwrite: bool = True, create: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on a clean exit it becomes ``dest`` (replacing an existing
    file only with ``overwrite``), on any exception (Ctrl-C included) it is removed and ``dest`` is left
    as it was. ``create=False`` yields the name without creating the file (for writers that refuse to
    write over an existing file)."""
    dest = Path(dest)
    for stale in stale_temporaries(dest):
        print(f"removing {stale}, left by an interrupted run")
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=_folder(dest), prefix=f".{dest.name}.{host()}.{os.getpid()}.", suffix=".part")
    os.close(fd)
    tmp_path = Path(tmp)
    if not create:
        tmp_path.unlink()
    try:
        yield tmp_path
        _publish(tmp_path, dest, overwrite)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically (replacing it); returns ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
