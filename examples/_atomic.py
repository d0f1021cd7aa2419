"""Write output files atomically: into a temporary file next to the target, then rename, so an
interrupted run never leaves a half-written model, table or figure under the final name."""
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
    finally:
        temporary.unlink(missing_ok=True)
    return path
