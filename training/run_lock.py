"""One writer per folder: an exclusive lock on `FOLDER/.lock` held while a training (its output_dir) or a
data.prepare (its --out) runs.

Two trainings in one folder would commit the same step folders over each other, wipe each other's half-written
staging folders and interleave their metrics; two data.prepare runs would write the same shards and resume
records over each other. The lock is `fcntl.flock` (advisory, released by the OS when the process ends, however
it ends); the file holds the owner's PID for the message. Where fcntl does not exist (Windows), or the
filesystem refuses locks (Lustre mounted without `flock`, some NFS setups), folders are not locked and a warning
says so.
"""

import errno
import os
import warnings
from pathlib import Path
from typing import IO, NamedTuple, Optional

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_FILE = ".lock"
# flock errors that mean "this filesystem has no locks" (Lustre without flock, some NFS): train unlocked
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


class Holder(NamedTuple):
    """Who else would hold a folder, and what the user can do about it (for the messages)."""
    who: str
    wait: str
    elsewhere: str


TRAINING = Holder("another training", "wait for it to finish or stop it (SIGTERM checkpoints it)",
                  "pick another --output_dir")


def _try_lock(path: Path, holder: Holder) -> tuple[Optional[IO], Optional[str], Optional[OSError]]:
    """Open `path` for writing (NFS emulates flock with write locks) and lock it without waiting:
    (locked handle, None, None), (None, why it is not free, None), or (None, None, the error) when this
    filesystem has no locks."""
    try:
        handle = open(path, "a+")
    except OSError as err:
        return None, f"cannot open {path} ({err}): check the permissions of {path.parent}, or {holder.elsewhere}", None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        return None, f"{path.parent} is in use by {holder.who} (pid {pid}): {holder.wait}, or {holder.elsewhere}", None
    except OSError as err:
        handle.close()
        if err.errno in NO_LOCKS:
            return None, None, err
        # e.g. EACCES, how some filesystems say "held by another": not free
        return None, f"could not lock {path} ({err}): {holder.who} may hold it", None
    return handle, None, None


def folder_in_use(out: Path, holder: Holder = TRAINING) -> Optional[str]:
    """The message for a folder another process holds, else None. Creates nothing."""
    path = Path(out) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    handle, message, _ = _try_lock(path, holder)
    if handle is not None:
        handle.close()  # closing releases the lock
    return message  # None also when the filesystem has no locks: lock_run_folder warns


def lock_run_folder(out: Path, holder: Holder = TRAINING) -> tuple[Optional[IO], Optional[str]]:
    """Create `out` if needed and lock it: (open lock file to keep until the run ends, None), or (None, the
    message) when another process holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None, None
    handle, message, no_locks = _try_lock(out / LOCK_FILE, holder)
    if no_locks is not None:
        warnings.warn(f"could not lock {out / LOCK_FILE} ({no_locks}): this filesystem does not support locks, so "
                      f"nothing stops {holder.who} from writing into {out} at the same time", stacklevel=2)
    if handle is not None:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle, message
