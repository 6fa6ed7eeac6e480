"""Experiment reports: report.md/summary.json written atomically, the index, verdict checks."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from minifim import __version__
from minifim.tools.report import Report, main, markdown_table, quick, results_root, write_index


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIFIM_RESULTS", str(tmp_path))
    monkeypatch.delenv("QUICK", raising=False)
    return tmp_path


def _leftovers(path):
    return [p.name for p in path.rglob(".*.tmp")]


def test_report_writes_markdown_and_summary(root):
    assert results_root() == root
    rep = Report("demo", "A demo", "F = GGN for canonical links (Martens 2014).", seed=3)
    rep.section("Setup", "An MLP 4-8-3.")
    rep.text("Some *markdown*.")
    rep.table(["N", "error"], [(10, 1.23456e-13), (100, 2.5e-14)])
    rep.verdict("agrees", "max relative error 1.2e-13")
    path = rep.save()
    assert path == root / "demo" / "report.md"
    md = path.read_text()
    assert md.startswith("# A demo\n")
    assert "**Claim tested.** F = GGN for canonical links" in md
    assert "**Verdict: agrees.** max relative error 1.2e-13" in md
    assert "Seed 3" in md and f"minifim {__version__}" in md and "QUICK" not in md
    assert "## Setup" in md and "| N | error |" in md and "| 10 | 1.235e-13 |" in md
    summary = json.loads((root / "demo" / "summary.json").read_text())
    assert summary["verdict"] == "agrees" and summary["seed"] == 3
    assert summary["name"] == "demo" and summary["quick"] is False
    assert summary["minifim_version"] == __version__ and summary["figures"] == []
    assert _leftovers(root) == []


def test_report_figure_and_index(root, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    monkeypatch.setenv("QUICK", "1")
    rep = Report("with_fig", "With a figure", "claim one", seed=0)
    fig, ax = plt.subplots()
    ax.plot(np.arange(3))
    out = rep.figure(fig, "line.png", "A line")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep.verdict("inconclusive", "n too small")
    rep.save()
    rep2 = Report("another", "Another", "claim two", seed=1)
    rep2.verdict("disagrees", "off by 2x")
    rep2.save()
    summary = json.loads((root / "with_fig" / "summary.json").read_text())
    assert summary["figures"] == ["line.png"] and summary["quick"] is True
    assert "![A line](line.png)" in (root / "with_fig" / "report.md").read_text()
    index = write_index().read_text()
    assert "| another | disagrees |" in index and "| with_fig | inconclusive |" in index
    assert "## With a figure" in index and "[Full report](with_fig/report.md)" in index
    assert "![A line](with_fig/line.png)" in index and "QUICK mode" in index
    assert "*A line*" in index and "Total run time" in index
    assert index.index("another") < index.index("with_fig")
    assert _leftovers(root) == []


def test_bad_verdict_and_unsaved(root):
    rep = Report("bad", "Bad", "claim", seed=0)
    with pytest.raises(
        ValueError,
        match=r"status: expected one of \['agrees', 'disagrees', "
        r"'inconclusive'\], received 'maybe'",
    ):
        rep.verdict("maybe", "?")
    with pytest.raises(ValueError, match=r"verdict: call Report.verdict"):
        rep.save()
    assert not (root / "bad" / "report.md").exists()


def test_markdown_table_and_quick(monkeypatch):
    assert markdown_table(["a", "b"], [(1, 0.5)]) == "| a | b |\n|---|---|\n| 1 | 0.5 |\n"
    assert markdown_table(["|x|"], [("|EF - F|",)]) == "| \\|x\\| |\n|---|\n| \\|EF - F\\| |\n"
    with pytest.raises(ValueError, match="rows: expected 2 cells per row, received 1"):
        markdown_table(["a", "b"], [(1,)])
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False)]:
        monkeypatch.setenv("QUICK", value)
        assert quick() is expected
    monkeypatch.delenv("QUICK")
    assert quick() is False


def test_cli(root, capsys):
    Report("x", "X", "c", seed=0).verdict("agrees", "d")  # unsaved: not indexed
    assert main(["index", str(root)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (root / "README.md").exists()
    assert main([]) == 2


def test_analysis_helpers():
    from minifim.tools.report import angle_degrees, loglog_slope

    x = np.array([1.0, 10.0, 100.0])
    assert loglog_slope(x, 3.0 * x**-0.5) == pytest.approx(-0.5, abs=1e-12)
    assert angle_degrees([1.0, 0.0], [0.0, 2.0]) == pytest.approx(90.0, abs=1e-12)
    assert angle_degrees([1.0, 1.0], [2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    assert angle_degrees([1.0, 1e-9], [1.0, 0.0]) == pytest.approx(np.degrees(1e-9), rel=1e-6)
    assert angle_degrees([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(180.0, abs=1e-12)


def test_blas_threads_follow_threadpool_limits():
    from threadpoolctl import threadpool_info, threadpool_limits

    from minifim.tools.report import blas_threads

    with threadpool_limits(limits=1, user_api="blas"):
        assert blas_threads() == 1
    free = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    assert blas_threads() == free


def test_report_records_blas_threads(root):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        rep = Report("pinned", "Pinned", "claim", seed=0)
        rep.verdict("agrees", "d")
        path = rep.save()
    assert rep.blas_threads == 1
    assert "run time" in path.read_text() and "(1 BLAS thread)" in path.read_text()
    assert json.loads((root / "pinned" / "summary.json").read_text())["blas_threads"] == 1
    index = write_index(root).read_text()
    assert "| experiment | verdict | run time (s) | BLAS threads | seed |" in index
    assert "| pinned | agrees |" in index and " | 1 | 0 |" in index


EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("[a-z]*.py"))


@pytest.mark.parametrize("script", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_pins_blas_threads(script):
    """Each experiment states its BLAS thread count and runs main() under threadpoolctl's
    limit (small solves dominate: free threads made the full run 4x and merging 27x slower)."""
    tree = ast.parse(script.read_text())
    counts = [
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        and [t.id for t in n.targets if isinstance(t, ast.Name)] == ["BLAS_THREADS"]
        and isinstance(n.value, ast.Constant)
    ]
    assert counts and isinstance(counts[0], int) and counts[0] >= 1, "BLAS_THREADS = <int>"
    main_guard = [
        n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
    ]
    assert len(main_guard) == 1
    guard = ast.unparse(main_guard[0])
    assert "threadpool_limits(limits=BLAS_THREADS, user_api='blas')" in guard, guard
    assert "main()" in guard


def test_t_interval_matches_closed_form_and_covers():
    import numpy as np
    from scipy import stats

    from minifim.tools.report import paired_t_interval, t_interval

    x = np.array([1.0, 2.0, 4.0, 7.0])
    m, lo, hi = t_interval(x, 0.9)
    half = stats.t.ppf(0.95, 3) * np.std(x, ddof=1) / 2.0
    assert m == x.mean() and abs((hi - lo) / 2 - half) < 1e-12 * half
    # coverage over many synthetic experiments (independent route: the nominal rate)
    rng = np.random.default_rng(0)
    hits = sum(
        lo <= 0.0 <= hi for _, lo, hi in (t_interval(rng.normal(size=5)) for _ in range(2000))
    )
    assert abs(hits / 2000 - 0.95) < 4 * np.sqrt(0.95 * 0.05 / 2000)
    m, lo, hi = paired_t_interval(x + 1.0, x)
    assert m == 1.0 and lo == hi == 1.0


def test_bootstrap_interval_brackets_statistic_and_rejects_bad_input():
    import numpy as np
    import pytest

    from minifim.tools.report import bootstrap_interval, t_interval

    x = np.arange(10.0)
    s, lo, hi = bootstrap_interval(x, 0, statistic=np.median)
    assert lo <= s <= hi and s == 4.5
    with pytest.raises(ValueError, match="values"):
        t_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=1.5)


def test_report_records_claim_criterion_measures_and_sanity(root):
    from minifim.tools.report import format_measure, t_interval

    rep = Report("proto", "Protocol", "EF distorts NGD (Kunstner et al. 2019).", seed=4)
    rep.paper_claim("the EF preconditioner distorts the update", "Kunstner et al. 2019, Fig. 2")
    rep.criterion("agrees if the angle's 95% interval lies above 20 deg")
    x = np.array([30.0, 34.0, 32.0])
    text = rep.measure("angle", *t_interval(x), unit="deg", interval="95% t", n=3)
    mean, lo, hi = t_interval(x)
    assert text == f"angle = {mean:.4g} [{lo:.4g}, {hi:.4g}] deg"
    assert rep.measure("damping", 1e-4) == "damping = 0.0001"
    rep.sanity("F = E_y[GGN]", True, "max rel err 1e-15")
    rep.sanity("symmetry", False, "asymmetric by 1e-3")
    rep.verdict("agrees", text)
    md = rep.save().read_text()
    assert "**Paper's claim** (Kunstner et al. 2019, Fig. 2). the EF preconditioner" in md
    assert "**Criterion (fixed before the run).** agrees if the angle's" in md
    assert "| angle | 32 | [" in md and "| deg | 95% t | 3 |" in md
    assert "| damping | 0.0001 | (no interval) | - | - | - |" in md
    assert "1/2 pass" in md and "| symmetry | NO | asymmetric by 1e-3 |" in md
    assert md.index("Paper's claim") < md.index("**Verdict")
    summary = json.loads((root / "proto" / "summary.json").read_text())
    assert summary["paper_claims"] == [
        {
            "text": "the EF preconditioner distorts the update",
            "source": "Kunstner et al. 2019, Fig. 2",
        }
    ]
    assert summary["criteria"] == ["agrees if the angle's 95% interval lies above 20 deg"]
    m = summary["measures"][0]
    assert (m["mean"], m["low"], m["high"], m["unit"], m["n"]) == (mean, lo, hi, "deg", 3)
    assert format_measure(m) == text
    assert [c["passed"] for c in summary["sanity_checks"]] == [True, False]
    bare = Report("bare", "Bare", "c", seed=0)
    bare.verdict("inconclusive", "d")
    bare.save()
    index = write_index(root).read_text()
    assert "**Paper's claim** (Kunstner et al. 2019, Fig. 2)" in index
    assert "| angle | 32 | [" in index and "1/2 pass" in index
    assert "Not stated by this experiment: paper's claim, criterion." in index
    assert index.count("Not stated by this experiment") == 1


def test_report_protocol_rejects_bad_input(root):
    rep = Report("badproto", "Bad", "c", seed=0)
    with pytest.raises(ValueError, match="low, high: expected both or neither"):
        rep.measure("x", 1.0, 0.0)
    with pytest.raises(ValueError, match="low <= mean <= high"):
        rep.measure("x", 1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="text, source: expected non-empty"):
        rep.paper_claim("claim", " ")
    with pytest.raises(ValueError, match="text: expected a non-empty criterion"):
        rep.criterion("")


def test_interval_position_and_verdict():
    from minifim.tools.report import interval_position, verdict_from_positions

    assert interval_position((1.0, 0.95, 1.05), 0.9, 1.1) == "inside"
    assert interval_position((1.0, 0.85, 1.05), 0.9, 1.1) == "overlaps"
    assert interval_position((0.5, 0.4, 0.6), 0.9, 1.1) == "outside"
    assert interval_position((2.0, 1.5, 2.5), 0.9, 1.1) == "outside"
    assert verdict_from_positions(["inside", "inside"]) == "agrees"
    assert verdict_from_positions(["inside", "overlaps"]) == "inconclusive"
    assert verdict_from_positions(["overlaps", "outside"]) == "disagrees"
    with pytest.raises(ValueError, match="positions"):
        verdict_from_positions([])
    with pytest.raises(ValueError, match="low <= high"):
        interval_position((1.0, 0.9, 1.1), 2.0, 1.0)
