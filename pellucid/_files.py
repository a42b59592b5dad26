"""Files that are whole or absent: every write pellucid makes goes through :func:`atomic_write`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file in ``path``'s folder (created if needed), then rename
    it to ``path``: an interruption never leaves half a file. The temporary name ends with
    ``path``'s suffix (``np.savez`` would append ``.npz`` otherwise). A failed write raises
    ``OSError`` whatever the writer raised (``torch.save`` on a full disk raises a
    ``RuntimeError`` from its zip writer), so callers handle one kind of write failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp" + path.suffix)
    os.close(handle)
    try:
        try:
            write(Path(tmp))
        except OSError:
            raise
        except Exception as error:
            raise OSError(f"could not write {path}: {error}") from error
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
