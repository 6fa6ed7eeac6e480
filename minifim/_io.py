"""Atomic file output (private): write to a temporary file in the same folder, then rename.

A reader never sees a half-written result, and an interrupted run leaves the previous file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_savez", "atomic_savefig"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``os.replace`` of a same-folder temp file).

    On any failure or interruption (``OSError`` such as a full disk or a read-only folder,
    ``KeyboardInterrupt``) the temporary file is closed and removed, ``path`` keeps its
    previous content, and the original exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    fh = None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> the usual mode of a new file
        fh = os.fdopen(fd, "wb")
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fh is None:  # fdopen did not take ownership of the descriptor
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):  # never hide the original error
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savez(path: str | os.PathLike[str], arrays: dict[str, Any]) -> Path:
    """``numpy.savez`` of ``arrays`` (name -> array) to ``path`` atomically (uncompressed).

    Object arrays are refused: every file minifim writes loads with ``allow_pickle=False``.
    """
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"arrays[{name!r}]: object arrays cannot be stored without pickle")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``fig.savefig`` to ``path`` atomically (format from the suffix)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    return atomic_write_bytes(path, buf.getvalue())
