"""Atomic file output: content, no temporary files left, failures keep the previous file."""

import os

import numpy as np
import pytest

from minifim import _io
from minifim._io import atomic_savefig, atomic_savez, atomic_write_bytes, atomic_write_text


def _temps(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_write_text_and_bytes(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "b" / "note.md", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_text(p, "second")
    assert p.read_text() == "second"
    q = atomic_write_bytes(str(tmp_path / "raw.bin"), b"\x00\x01")
    assert q.read_bytes() == b"\x00\x01"
    assert _temps(tmp_path) == [] and _temps(tmp_path / "a" / "b") == []


def test_failure_keeps_previous_file_and_cleans_up(tmp_path, monkeypatch):
    p = atomic_write_text(tmp_path / "keep.txt", "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert _temps(tmp_path) == []


def test_savez_round_trip_without_pickle(tmp_path):
    arrays = {"F": np.arange(6.0).reshape(2, 3), "labels": np.array([1, 2], dtype=np.int64)}
    p = atomic_savez(tmp_path / "m.npz", arrays)
    with np.load(p, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["F"], arrays["F"])
        np.testing.assert_array_equal(z["labels"], arrays["labels"])
        assert z["labels"].dtype == np.int64
    assert _temps(tmp_path) == []


def test_savez_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match=r"arrays\['bad'\]: object arrays cannot be stored"):
        atomic_savez(
            tmp_path / "x.npz", {"ok": np.ones(2), "bad": np.array([1, "a"], dtype=object)}
        )
    assert not (tmp_path / "x.npz").exists() and _temps(tmp_path) == []


def test_savefig(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = atomic_savefig(fig, tmp_path / "f.png")
    pdf = atomic_savefig(fig, tmp_path / "f.pdf")
    plt.close(fig)
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    assert _temps(tmp_path) == []


def _open_fds():
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def _raise(err):
    def fail(*args, **kwargs):
        raise err

    return fail


@pytest.mark.parametrize(
    "where, err",
    [
        ("fsync", OSError(28, "No space left on device")),  # full disk while flushing
        ("replace", PermissionError(13, "Permission denied")),  # read-only target
        ("fchmod", OSError(1, "Operation not permitted")),
        ("fdopen", OSError(24, "Too many open files")),
        ("fsync", KeyboardInterrupt()),  # interrupted
    ],
)
def test_failed_or_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch, where, err):
    p = atomic_write_bytes(tmp_path / "keep.bin", b"old")
    before = _open_fds()
    monkeypatch.setattr(_io.os, where, _raise(err))
    with pytest.raises(type(err)):
        atomic_write_bytes(p, b"new" * 1000)
    monkeypatch.undo()
    assert p.read_bytes() == b"old"
    assert _temps(tmp_path) == [] and sorted(os.listdir(tmp_path)) == ["keep.bin"]
    assert _open_fds() == before  # the temporary file's descriptor is closed too


def test_interrupted_write_of_data_leaves_nothing_behind(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Interrupted:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(_io.os, "fdopen", lambda fd, mode: Interrupted(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(tmp_path / "x.npz", {"a": np.ones(1000)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_failing_cleanup_does_not_hide_the_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_io.os, "fsync", _raise(OSError(28, "No space left on device")))
    monkeypatch.setattr(_io.os, "unlink", _raise(PermissionError(13, "cannot unlink")))
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(tmp_path / "t.txt", "x")
