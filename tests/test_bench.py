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


def _fake_peers(monkeypatch, routes):
    """A stand-in ``minifim.tools.peers`` offering ``routes(net, theta, X, y, V)``."""
    import sys
    import types

    mod = types.ModuleType("minifim.tools.peers")
    mod.PEERS = ("good", "bad")
    mod.QUANTITIES = ("scores", "true_fisher", "hessian", "fisher_block", "hessian_block")
    mod.available = lambda: {"good": "1.0", "bad": "0.1"}
    mod.peer_routes = lambda net, theta, X, y, V=None, peers=None: routes(net, theta, X, y, V)
    monkeypatch.setitem(sys.modules, "minifim.tools.peers", mod)
    import minifim.tools

    monkeypatch.setattr(minifim.tools, "peers", mod, raising=False)


def test_peer_rows_trust_only_agreeing_peers(monkeypatch):
    """A peer that computes the same matrix enters the ratio; one off by a factor 2 (a sum for
    a mean) is reported as disagreeing and never counted as the best peer."""
    import minifim

    def routes(net, theta, X, y, V):
        F = minifim.true_fisher(net, theta, X)
        return {
            ("good", "true_fisher"): lambda: F.copy(),
            ("bad", "true_fisher"): lambda: 2 * F,
            ("bad", "hessian"): lambda: (_ for _ in ()).throw(RuntimeError("no Hessian")),
        }

    _fake_peers(monkeypatch, routes)
    rows = bench._peer_rows("tiny", [4, 5, 3], 7, 2)
    by_q = {r["quantity"]: r for r in rows}
    assert set(by_q) == {"scores", "true_fisher", "hessian", "fisher_block", "hessian_block"}
    tf = by_q["true_fisher"]
    assert tf["peers"]["good"]["agrees"] and tf["peers"]["good"]["agreement"] == 0.0
    assert not tf["peers"]["bad"]["agrees"]
    assert abs(tf["peers"]["bad"]["agreement"] - 1.0) < 1e-12
    assert tf["best_peer"] == "good" and tf["best_peer_seconds"] > 0
    assert "error" in by_q["hessian"]["peers"]["bad"]
    assert by_q["scores"]["best_peer"] is None
    md = bench._tables(rows)
    assert "disagrees (1.0e+00)" in md and "failed: RuntimeError" in md
    assert json.loads(json.dumps(rows)) == rows  # JSON-ready


def test_interleaved_counts_first_runs_and_caps_slow_routes():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1

    t = bench._interleaved({"fast": fast, "slow": slow}, 3, 1, first={"slow": 100.0}, budget=60)
    assert calls == {"fast": 3, "slow": 0} and t["slow"] == 100.0 and t["fast"] >= 0


def test_block_gemm_floor_runs():
    import minifim

    net = minifim.MLP([3, 4, 2], activation="tanh", likelihood="categorical")
    assert bench._block_gemm_floor(net, 5, 2)() is None
