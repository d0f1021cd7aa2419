"""Writing files so that nothing is half-written: every output of the toolkit (models, logs'
records, CSV rewrites, figures, tables, scripts) goes through :func:`write_atomically`."""
import contextlib
import os
from pathlib import Path


def write_atomically(path, write, mode=None):
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    The temporary file lies in the same folder (a leading dot, the process id and the same
    suffix, so writers that pick the format from the suffix still do), is flushed to disk before
    the rename and removed when ``write`` fails: ``path`` holds either its old content or the
    complete new one. ``mode``: permission bits for the new file. An OSError names ``path``.
    Returns ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as error:
        raise type(error)(error.errno, f"cannot write {path}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return path


def check_writable_folder(folder, flag):
    """ValueError before any work when files cannot be created in ``folder`` (made if missing)."""
    folder = Path(folder)
    if str(folder) == "":
        raise ValueError(f"{flag} must name a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{flag} {folder}: cannot write there ({error.strerror or error})") from None


def append_durably(path, data):
    """Append ``data`` (bytes: whole lines) to the existing file ``path`` in one write loop and flush
    it to disk, so that a reader sees each line complete or, after a crash, a torn last line only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        while data:
            data = data[os.write(descriptor, data):]
        os.fsync(descriptor)
    except OSError as error:
        raise OSError(f"cannot append to {path}: {error.strerror or error}") from None
    finally:
        os.close(descriptor)
