"""Write output files atomically: into a temporary file next to the target, then rename, so an
interrupted run never leaves a half-written model, table or figure under the final name."""
import contextlib
import os
from pathlib import Path


def write_atomically(path, write):
    """Call ``write(temporary_path)`` and rename the result to ``path`` (folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise OSError(f"cannot write {path}: {error.strerror or error}") from None
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
