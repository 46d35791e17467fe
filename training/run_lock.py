"""One training per run folder: an exclusive lock on `output_dir/.lock` held for the whole run.

Two trainings in one folder would commit the same step folders over each other, wipe each other's half-written
staging folders and interleave their metrics. The lock is `fcntl.flock` (advisory, released by the OS when the
process ends, however it ends); the file holds the owner's PID for the message. Where fcntl does not exist
(Windows), or the filesystem refuses locks (Lustre mounted without `flock`, some NFS setups), runs are not
locked and a warning says so.
"""

import errno
import os
import warnings
from pathlib import Path
from typing import IO, Optional

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_FILE = ".lock"
# flock errors that mean "this filesystem has no locks" (Lustre without flock, some NFS): train unlocked
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def _unopenable(path: Path, err: OSError) -> str:
    return f"cannot open {path} ({err}): check the permissions of the run folder, or pick another --output_dir"


def _busy_message(out: Path, handle: IO) -> str:
    handle.seek(0)
    pid = handle.read().strip() or "?"
    return (f"{out} is in use by another training (pid {pid}): wait for it to finish or stop it "
            "(SIGTERM checkpoints it), or pick another --output_dir")


def folder_in_use(out: Path) -> Optional[str]:
    """The message for a run folder another process is training in, else None. Creates nothing."""
    path = Path(out) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        handle = open(path, "a+")  # opened for writing: NFS emulates flock with write locks
    except OSError as err:
        return _unopenable(path, err)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _busy_message(Path(out), handle)
        except OSError as err:
            if err.errno in NO_LOCKS:
                return None  # lock_run_folder warns
            return f"could not lock {path} ({err}): another training may hold it"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def lock_run_folder(out: Path) -> tuple[Optional[IO], Optional[str]]:
    """Create `out` if needed and lock it: (open lock file to keep until the run ends, None), or (None, the
    message) when another process holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None, None
    try:
        handle = open(out / LOCK_FILE, "a+")
    except OSError as err:
        return None, _unopenable(out / LOCK_FILE, err)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        message = _busy_message(out, handle)
        handle.close()
        return None, message
    except OSError as err:
        handle.close()
        if err.errno not in NO_LOCKS:  # e.g. EACCES, how some filesystems say "held by another": not free
            return None, f"could not lock {out / LOCK_FILE} ({err}): another training may hold it"
        warnings.warn(f"could not lock {out / LOCK_FILE} ({err}): this filesystem does not support locks, so "
                      "nothing stops a second training in the same output_dir", stacklevel=2)
        return None, None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle, None
