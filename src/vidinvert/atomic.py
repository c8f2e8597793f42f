"""One way to write a file: into a hidden temp file beside it, then claimed under the final name in one step.

Every writer (videos, settings JSON, saved inversions, checkpoints) goes through ``atomic_write``, so a crash, a
full disk or Ctrl-C never leaves a half-written file under the final name, and nothing is overwritten without
``force``:

- without ``force`` the temp file is hard-linked to the final name, which fails if the name exists, so of two runs
  writing the same output exactly one wins (the check and the claim are one step);
- inside ``outputs_together()`` the files of a job are written to temps and claimed together when the block ends:
  all of them, or (on any error, Ctrl-C included) none, with files replaced under ``force`` put back;
- temp names carry the writing process's id, so ``clean_stale_temps`` can remove the temps a killed run left.
"""

from __future__ import annotations

import contextvars
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import VidinvertError

TEMP_PREFIX = ".vidinvert-"  # temp files start with this (hidden; recognisable as ours)
# This machine, in temp names: a process id is only meaningful on the machine that wrote it.
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
TEMP_PATTERN = re.compile(rf"^{re.escape(TEMP_PREFIX)}(\d+)-([0-9a-f]{{6}})-")  # pid, host tag

# The group the current job's writes join (see outputs_together); None: each write is claimed at once.
_GROUP: contextvars.ContextVar[list | None] = contextvars.ContextVar("vidinvert_outputs", default=None)


def temp_prefix(stem: str = "") -> str:
    """Start of a temp name of this process: ``.vidinvert-<pid>-<host>-<stem>.``."""
    return f"{TEMP_PREFIX}{os.getpid()}-{HOST_TAG}-{stem}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def is_stale_temp(name: str) -> bool:
    """Whether ``name`` is a temp of a vidinvert writer on this machine that is gone (killed): safe to remove."""
    match = TEMP_PATTERN.match(name)
    return bool(match) and match.group(2) == HOST_TAG and int(match.group(1)) != os.getpid() \
        and not _alive(int(match.group(1)))


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files (and temp folders) that runs of vidinvert on this machine left in ``folder`` when they
    were killed (their process is gone). Returns what was removed; errors are ignored (it is only tidying)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not is_stale_temp(entry.name):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def refuse_existing(path: Path, force: bool) -> None:
    """One-line errors for a target that is a folder, that exists without ``force``, or that cannot be looked at."""
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as err:  # e.g. a folder on the way that this user may not enter
        raise VidinvertError(f"cannot access {path} ({err.strerror or err})",
                             "check the folder's permissions or choose another folder") from None
    if is_dir:
        raise VidinvertError(f"output {path} is a folder", "give a file name, e.g. out.mp4")
    if exists and not force:
        raise VidinvertError(f"{path} already exists", "use --force to overwrite or choose another name")


def _claim(tmp: str, path: Path, force: bool) -> str | None:
    """Put ``tmp`` under ``path``. Without ``force``, fail if ``path`` exists, atomically. With ``force``, an existing
    file is kept aside under a temp name first. Returns that name (to restore or delete), or ``None``."""
    if force:
        backup = None
        if path.is_file() or path.is_symlink():
            backup = str(path.with_name(f"{temp_prefix(path.stem)}old-{uuid.uuid4().hex[:8]}{path.suffix}"))
            os.rename(path, backup)
        os.replace(tmp, path)
        return backup
    try:
        os.link(tmp, path)  # fails with EEXIST if another run claimed the name first
    except FileExistsError:
        raise VidinvertError(f"{path} already exists (another run wrote it meanwhile)",
                             "use --force to overwrite or choose another name") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        try:  # no hard links here (e.g. FAT, some network mounts): claim the name, then fill it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise VidinvertError(f"{path} already exists (another run wrote it meanwhile)",
                                 "use --force to overwrite or choose another name") from None
        os.replace(tmp, path)
        return None
    os.unlink(tmp)
    return None


def _commit(staged: list[tuple[str, Path, bool]]) -> None:
    """Claim every staged ``(tmp, path, force)`` in path order, or none: on any failure the ones claimed are
    removed (files they replaced put back) and every temp is deleted."""
    done: list[tuple[Path, str | None]] = []
    try:
        for tmp, path, force in sorted(staged, key=lambda item: str(item[1])):
            done.append((path, _claim(tmp, path, force)))
    except BaseException as err:
        for path, backup in reversed(done):
            try:
                path.unlink(missing_ok=True)
                if backup is not None:
                    os.rename(backup, path)
            except OSError:
                pass
        _discard(staged)
        if isinstance(err, OSError):
            raise _write_error(Path(staged[len(done)][1]) if len(done) < len(staged) else Path("."), err) from None
        raise
    for _, backup in done:
        if backup is not None:
            Path(backup).unlink(missing_ok=True)


def _discard(staged: list[tuple[str, Path, bool]]) -> None:
    for tmp, _, _ in staged:
        try:
            os.unlink(tmp)
        except OSError:
            pass


@contextmanager
def outputs_together() -> Iterator[None]:
    """Inside the block, files written with ``atomic_write`` stay temps; when the block ends they are claimed
    together (all or none). On an exception (Ctrl-C included) nothing appears. A nested block joins the outer one."""
    if _GROUP.get() is not None:
        yield
        return
    staged: list[tuple[str, Path, bool]] = []
    token = _GROUP.set(staged)
    try:
        yield
    except BaseException:
        _GROUP.reset(token)
        _discard(staged)
        raise
    _GROUP.reset(token)
    _commit(staged)


def _write_error(path: Path, err: OSError) -> VidinvertError:
    return VidinvertError(f"cannot write to {path.parent} ({err.strerror or err})",
                          "check the folder exists, is writable and the disk has space")


@contextmanager
def atomic_write(path: str | os.PathLike, force: bool = False, now: bool = False) -> Iterator[str]:
    """Yield a temp file path beside ``path``; when the block ends without error it becomes ``path``.

    The temp file gets the mode a new file would get (mkstemp makes 0600). On any exception, Ctrl-C included, the
    temp file is removed and ``path`` is left as it was. Inside ``outputs_together()`` (and unless ``now``) the file
    is claimed when that block ends, with the job's other files.

    Args:
        path: the final file; missing folders are created.
        force: allow replacing an existing file.
        now: claim at once even inside ``outputs_together()`` (checkpoints, which must survive a failed job).
    """
    path = Path(path)
    refuse_existing(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=temp_prefix(path.stem), suffix=path.suffix or ".tmp", dir=path.parent)
        os.close(handle)
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError as err:
        raise _write_error(path, err) from None
    group = None if now else _GROUP.get()
    try:
        try:
            yield tmp
        except OSError as err:  # the writer's own OSError (a full disk, an I/O error): one line
            raise _write_error(path, err) from None
        if group is not None:
            group.append((tmp, path, force))
            tmp = None  # the group owns it now
        else:
            try:
                backup = _claim(tmp, path, force)
            except OSError as err:
                raise _write_error(path, err) from None
            if backup is not None:  # the replaced file, kept aside only while a group might put it back
                os.unlink(backup)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
