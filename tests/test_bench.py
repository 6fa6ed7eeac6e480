"""``minifim.tools.bench``: the script's plumbing (the timings themselves are not tested)."""

from __future__ import annotations

import json

import numpy as np

from minifim.tools import bench


def test_out_writes_markdown_and_json(tmp_path, monkeypatch, capsys):
    """``--out DIR`` writes both files; the JSON rows round-trip and the table has the ratio."""

    def fake(repeat):
        return [{"item": "fake", "seconds": 2.0, "floor": "f", "floor_seconds": 1.0}]

    monkeypatch.setitem(bench.ITEMS, "fake", (fake, False))
    assert bench.main(["fake", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert rows == fake(1)
    md = (tmp_path / "bench.md").read_text()
    assert "| fake |" in md and "2.00x" in md
    assert "fake" in capsys.readouterr().out


def test_syrk_floor_and_blas_config():
    assert bench._syrk_floor(20, 30, 1, 1) >= 0.0
    assert isinstance(bench._blas_config(), str)
    assert np.isfinite(bench._syrk_floor(5, 5, 2))
