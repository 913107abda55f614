"""Atomic file writes: a reader sees the old file or the whole new one, never a half-written one."""
import contextlib
import os
import stat
import tempfile


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file to write; on success it replaces `path` in one step.

    The bytes go to a temporary file in the same directory (so the rename stays on one file
    system), are flushed to disk, then renamed over `path` with os.replace. On any error the
    temporary file is removed and `path` is left as it was. The new file keeps the permissions
    of the one it replaces (a chmod 600 stays 600); a new path gets a new file's (0666 − umask).
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode_for(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(path, owner=None):
    """Fail now, not after minutes of work, if atomic_write could not write `path`: it must be
    a file path in an existing, writable directory. Creates nothing. `owner` (e.g. "train: save")
    starts the error message."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    where = f"{owner} {path}" if owner else path
    if not path or path.endswith(os.sep) or os.path.isdir(path):
        raise ValueError(f"{where}: expected a file path, found {'a directory' if path else 'an empty path'}")
    if not os.path.isdir(directory):
        raise ValueError(f"{where}: expected an existing directory {directory}, found none")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: expected a writable directory, {directory} is not writable")
    return path


def _mode_for(path):
    """mkstemp makes 0600 files: give ours the mode of the file we replace, or a new file's."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask
