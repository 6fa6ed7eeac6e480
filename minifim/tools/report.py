"""Experiment reports: figures, markdown tables, verdicts, and the results index.

Each script in ``experiments/`` builds a :class:`Report`, adds sections, tables and figures,
states the claim it tests and a verdict (``"agrees"``, ``"disagrees"`` or ``"inconclusive"``,
with the numbers), and calls :meth:`Report.save`. That writes, atomically, under
``experiments/results/<name>/``: ``report.md``, the figures, and ``summary.json`` (claim,
verdict, seed, run time, minifim version, quick mode). ``python -m minifim.tools.report index``
collects every ``summary.json`` into ``experiments/results/README.md``.

What a reader (or a referee) needs from every experiment is recorded by five calls, each
stored in ``summary.json`` and listed by :func:`write_index`:

- :meth:`Report.paper_claim` ``(text, source)``: the paper's claim in the paper's own terms
  (its substance, quoted or closely paraphrased) and where it is made (figure, section);
- :meth:`Report.criterion` ``(text)``: the pass/fail rule, fixed before the run, that a wrong
  theory or a broken implementation would fail (the experiment module's pure criterion
  function, tested in the suite);
- :meth:`Report.measure` ``(name, mean, low, high, unit)``: every compared quantity with its
  confidence interval (``t_interval``, ``paired_t_interval``, ``bootstrap_interval`` return
  ``(mean, low, high)``, so ``rep.measure("gap", *t_interval(x), unit="nats")``);
- :meth:`Report.sanity` ``(name, passed, detail)``: identities that only a bug breaks, kept in
  the report as checks of the implementation, never as the verdict;
- :meth:`Report.verdict` ``(status, detail)``: ``"agrees"``, ``"disagrees"`` or
  ``"inconclusive"``, decided from the intervals by the criterion.

``QUICK=1`` in the environment selects the short mode (:func:`quick`); scripts use it to shrink
their workloads so that all experiments together finish in about a minute.

BLAS threads: the experiments are made of many small dense products and solves, where BLAS
threads only add overhead, and spinning threads on a loaded machine slow them down by orders of
magnitude. Each script therefore runs its ``main()`` under
``threadpoolctl.threadpool_limits(limits=BLAS_THREADS, user_api="blas")`` with the count it
states, and :meth:`Report.save` records the count in effect (:func:`blas_threads`) in
``report.md``, ``summary.json`` and the index.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_savefig, atomic_write_text
from .._version import __version__

__all__ = [
    "Report",
    "quick",
    "results_root",
    "markdown_table",
    "write_index",
    "blas_threads",
    "loglog_slope",
    "angle_degrees",
    "t_interval",
    "paired_t_interval",
    "bootstrap_interval",
    "format_measure",
    "interval_position",
    "verdict_from_positions",
]

VERDICTS = ("agrees", "disagrees", "inconclusive")


def quick() -> bool:
    """True when the environment variable ``QUICK`` is set to anything but ``""``/``"0"``."""
    return os.environ.get("QUICK", "0").strip() not in ("", "0")


def results_root() -> Path:
    """``$MINIFIM_RESULTS`` or ``./experiments/results``."""
    return Path(os.environ.get("MINIFIM_RESULTS", Path("experiments") / "results"))


def _fmt(value: object, floatfmt: str) -> str:
    """A table cell: floats by ``floatfmt``; ``|`` escaped so that ``|EF - F|`` stays in
    its cell."""
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|")


def blas_threads() -> int:
    """The number of threads the loaded BLAS libraries use now (the largest over them).

    Read with ``threadpoolctl.threadpool_info``, so it reflects an enclosing
    ``threadpool_limits(...)`` block as well as ``OPENBLAS_NUM_THREADS`` and friends.

    Examples
    --------
    >>> from threadpoolctl import threadpool_limits
    >>> with threadpool_limits(limits=1, user_api="blas"):
    ...     blas_threads()
    1
    """
    import numpy  # noqa: F401  (loads numpy's BLAS, so that it is counted)
    from threadpoolctl import threadpool_info

    counts = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else 1


def loglog_slope(x: Any, y: Any) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the exponent of a power law)."""
    import numpy as np

    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def angle_degrees(u: Any, v: Any) -> float:
    """Angle between two vectors in degrees, ``2 atan2(|u^ - v^|, |u^ + v^|)`` with unit
    vectors ``u^, v^`` (Kahan's form: accurate near 0 and 180 degrees, unlike ``arccos``)."""
    import numpy as np

    u = np.asarray(u, float) / np.linalg.norm(u)
    v = np.asarray(v, float) / np.linalg.norm(v)
    return float(np.degrees(2.0 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v))))


def t_interval(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """Student-t confidence interval of the mean of independent runs: ``(mean, low, high)``.

    ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``). ``values``: 1-D, at least 2 finite entries (seeds).
    """
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError(
            f"values: expected at least 2 finite values for an interval, received {x.size} "
            f"values ({int(np.sum(~np.isfinite(x)))} non-finite)"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), received {level!r}")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def paired_t_interval(a: Any, b: Any, level: float = 0.95) -> tuple[float, float, float]:
    """:func:`t_interval` of the paired differences ``a - b`` (one pair per seed): the
    comparison of two methods run on the same seeds. ``low > 0``: ``a`` exceeds ``b`` at
    this level."""
    import numpy as np

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"a, b: expected paired values of equal length, received {a.size}, {b.size}"
        )
    return t_interval(a - b, level)


def bootstrap_interval(
    values: Any,
    rng: Any,
    statistic: Any = None,
    level: float = 0.95,
    n_resamples: int = 2000,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval ``(statistic, low, high)`` of ``statistic`` (default: the
    mean) over resamples of the runs with replacement; ``rng`` a ``numpy.random.Generator``
    or a seed. For a median or a ratio, where the t-interval does not apply."""
    import numpy as np

    x = np.asarray(values, dtype=float).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"values: expected at least 2 finite values, received {x.size}")
    stat = np.mean if statistic is None else statistic
    gen = np.random.default_rng(rng)
    idx = gen.integers(0, x.size, size=(n_resamples, x.size))
    boots = np.array([stat(x[i]) for i in idx])
    lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return float(stat(x)), float(lo), float(hi)


def interval_position(interval: Sequence[float], low: float, high: float) -> str:
    """Where a confidence interval ``(estimate, lo, hi)`` lies against the band ``[low, high]``
    a claim predicts: ``"inside"`` (``low <= lo`` and ``hi <= high``), ``"outside"`` (disjoint
    from the band) or ``"overlaps"`` (neither: the run cannot decide).

    Examples
    --------
    >>> interval_position((1.0, 0.95, 1.04), 0.9, 1.1)
    'inside'
    >>> interval_position((1.3, 1.2, 1.4), 0.9, 1.1)
    'outside'
    """
    _, lo, hi = (float(v) for v in interval)
    if not low <= high:
        raise ValueError(f"low, high: expected low <= high, received {low!r}, {high!r}")
    if low <= lo and hi <= high:
        return "inside"
    if hi < low or lo > high:
        return "outside"
    return "overlaps"


def verdict_from_positions(positions: Iterable[str]) -> str:
    """Combine :func:`interval_position` results of the intervals a claim predicts inside
    their bands: ``"agrees"`` if all are inside, ``"disagrees"`` if any is outside,
    otherwise ``"inconclusive"``."""
    pos = list(positions)
    bad = [p for p in pos if p not in ("inside", "outside", "overlaps")]
    if not pos or bad:
        raise ValueError(
            "positions: expected a non-empty sequence of 'inside', 'outside', 'overlaps', "
            f"received {pos!r}"
        )
    if all(p == "inside" for p in pos):
        return "agrees"
    return "disagrees" if "outside" in pos else "inconclusive"


def markdown_table(
    headers: Iterable[Any], rows: Iterable[Sequence[object]], floatfmt: str = ".4g"
) -> str:
    """A GitHub-markdown table; floats formatted with ``floatfmt``."""
    headers = [_fmt(h, floatfmt) for h in headers]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"rows: expected {len(headers)} cells per row, received {len(row)}")
        lines.append("| " + " | ".join(_fmt(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


def format_measure(entry: dict[str, Any], floatfmt: str = ".4g") -> str:
    """``"name = mean [low, high] unit"`` (or ``"name = mean unit"`` without an interval)
    for one entry of ``summary.json``'s ``measures`` (see :meth:`Report.measure`)."""
    unit = f" {entry['unit']}" if entry.get("unit") else ""
    value = format(entry["mean"], floatfmt)
    if entry.get("low") is not None:
        value += f" [{format(entry['low'], floatfmt)}, {format(entry['high'], floatfmt)}]"
    return f"{entry['name']} = {value}{unit}"


def _measure_rows(measures: Sequence[dict[str, Any]]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for m in measures:
        has = m.get("low") is not None
        rows.append(
            (
                m["name"],
                format(m["mean"], ".4g"),
                f"[{m['low']:.4g}, {m['high']:.4g}]" if has else "(no interval)",
                m.get("unit") or "-",
                m.get("interval", "-") if has else "-",
                "-" if m.get("n") is None else m["n"],
            )
        )
    return rows


def _protocol_markdown(
    claims: Sequence[dict[str, str]],
    criteria: Sequence[str],
    measures: Sequence[dict[str, Any]],
    sanity: Sequence[dict[str, Any]],
) -> str:
    """The paper's claims, the criterion, the measured table and the sanity checks."""
    out = []
    for c in claims:
        out.append(f"**Paper's claim** ({c['source']}). {c['text']}\n")
    for c in criteria:
        out.append(f"**Criterion (fixed before the run).** {c}\n")
    if measures:
        out.append("**Measured.**\n")
        out.append(
            markdown_table(
                ["quantity", "estimate", "interval", "unit", "interval kind", "runs"],
                _measure_rows(measures),
            )
        )
    if sanity:
        ok = sum(bool(s["passed"]) for s in sanity)
        out.append(f"**Sanity checks (identities; not the verdict):** {ok}/{len(sanity)} pass.\n")
        out.append(
            markdown_table(
                ["check", "passed", "detail"],
                [(s["name"], "yes" if s["passed"] else "NO", s["detail"]) for s in sanity],
            )
        )
    return "\n".join(out) + ("\n" if out else "")


class Report:
    """A markdown report with figures for one experiment (see the module docstring).

    Parameters
    ----------
    name : str
        Folder name under the results root, e.g. ``"fisher_spectrum"``.
    title : str
    claim : str
        The published claim the experiment tests, with its reference.
    seed : int
        The seed every random step of the run derives from.
    """

    def __init__(self, name: str, title: str, claim: str, seed: int) -> None:
        self.name, self.title, self.claim, self.seed = name, title, claim, int(seed)
        self.dir = results_root() / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._parts: list[str] = []
        self._figures: list[str] = []
        self._start = time.perf_counter()
        self.blas_threads: int | None = None
        self.verdict_status: str | None = None
        self.verdict_detail = ""
        self.paper_claims: list[dict[str, str]] = []
        self.criteria: list[str] = []
        self.measures: list[dict[str, Any]] = []
        self.sanity_checks: list[dict[str, Any]] = []
        self._captions: dict[str, str] = {}

    def text(self, markdown: str) -> None:
        """Append a paragraph of markdown."""
        self._parts.append(markdown.strip() + "\n")

    def section(self, heading: str, markdown: str = "") -> None:
        """Append ``## heading`` and optional text."""
        self._parts.append(
            f"## {heading}\n\n{markdown.strip()}\n" if markdown else f"## {heading}\n"
        )

    def table(
        self, headers: Iterable[Any], rows: Iterable[Sequence[object]], floatfmt: str = ".4g"
    ) -> None:
        """Append a markdown table."""
        self._parts.append(markdown_table(headers, rows, floatfmt))

    def figure(self, fig: Any, filename: str, caption: str) -> Path:
        """Save ``fig`` (atomically, 120 dpi) next to the report and reference it."""
        path = atomic_savefig(fig, self.dir / filename, dpi=120, bbox_inches="tight")
        self._figures.append(filename)
        self._captions[filename] = caption
        self._parts.append(f"![{caption}]({filename})\n\n*{caption}*\n")
        try:  # close to free memory in long runs
            import matplotlib.pyplot as plt

            plt.close(fig)
        except ImportError:  # pragma: no cover
            pass
        return path

    def paper_claim(self, text: str, source: str) -> None:
        """Record a claim of the paper in its own terms and where it is made.

        Parameters
        ----------
        text : str
            The claim's substance, quoted or closely paraphrased (not the experiment's
            reformulation), e.g. ``"the empirical Fisher preconditioner distorts the update
            through the gradient magnitudes"``.
        source : str
            Reference with figure or section, e.g. ``"Kunstner et al. 2019, Sec. 3, Figs. 2-3"``.

        Call once per claim; experiments testing several papers call it several times.
        """
        if not str(text).strip() or not str(source).strip():
            raise ValueError(
                f"text, source: expected non-empty strings, received {text!r}, {source!r}"
            )
        self.paper_claims.append({"text": str(text).strip(), "source": str(source).strip()})

    def criterion(self, text: str) -> None:
        """Record the pass/fail rule of the verdict, fixed before the run.

        ``text`` states the rule in terms of the measured intervals, e.g. ``"agrees if the
        95% interval of the EF-F angle lies above 20 deg at every damping in {1e-4, 1e-2}"``;
        it should name the experiment's pure criterion function that the suite tests on a
        synthetic case where the claim holds and one where it fails.
        """
        if not str(text).strip():
            raise ValueError(f"text: expected a non-empty criterion, received {text!r}")
        self.criteria.append(str(text).strip())

    def measure(
        self,
        name: str,
        mean: float,
        low: float | None = None,
        high: float | None = None,
        unit: str = "",
        *,
        interval: str = "95% CI",
        n: int | None = None,
    ) -> str:
        """Record a measured quantity with its confidence interval; return it formatted.

        Parameters
        ----------
        name : str
            What is measured, e.g. ``"median angle EF vs F, damping 1e-2"``.
        mean : float
            Point estimate (mean over seeds, or the statistic of a bootstrap).
        low, high : float, optional
            The interval's ends (both or neither); ``None``: a point value without spread,
            marked as such in the index (use it for settings, not for compared quantities).
        unit : str
            Unit of ``mean``, ``low``, ``high`` (``""`` for dimensionless).
        interval : str
            How the interval was formed, e.g. ``"95% t over 8 seeds"``, ``"95% bootstrap"``.
        n : int, optional
            Number of independent runs behind the interval.

        Returns
        -------
        str
            ``"name = mean [low, high] unit"``, for sentences built from the run's numbers.

        Examples
        --------
        >>> import os, tempfile
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"MINIFIM_RESULTS": tempfile.mkdtemp()}):
        ...     rep = Report("demo", "Demo", "claim", seed=0)
        >>> rep.measure("slope", *t_interval([0.9, 1.1, 1.0]), unit="")
        'slope = 1 [0.7516, 1.248]'
        """
        if (low is None) != (high is None):
            raise ValueError(
                f"low, high: expected both or neither, received low={low!r}, high={high!r}"
            )
        values = [float(mean)] + ([] if low is None or high is None else [float(low), float(high)])
        if low is not None and not values[1] <= values[0] <= values[2]:
            raise ValueError(
                f"low, mean, high: expected low <= mean <= high, received {values[1]!r}, "
                f"{values[0]!r}, {values[2]!r}"
            )
        entry: dict[str, Any] = {
            "name": str(name),
            "mean": values[0],
            "low": None if low is None else values[1],
            "high": None if high is None else values[2],
            "unit": str(unit),
            "interval": str(interval) if low is not None else "none",
            "n": None if n is None else int(n),
        }
        self.measures.append(entry)
        return format_measure(entry)

    def sanity(self, name: str, passed: bool, detail: str) -> None:
        """Record an implementation check (an identity only a bug breaks): listed in the
        report and the index next to the verdict, but never the verdict itself."""
        self.sanity_checks.append(
            {"name": str(name), "passed": bool(passed), "detail": str(detail)}
        )

    def verdict(self, status: str, detail: str) -> None:
        """Record whether the run agrees with the claim, with the numbers that decide it."""
        if status not in VERDICTS:
            raise ValueError(f"status: expected one of {list(VERDICTS)}, received {status!r}")
        self.verdict_status, self.verdict_detail = status, detail

    def save(self) -> Path:
        """Write ``report.md`` and ``summary.json`` atomically; return the report's path."""
        if self.verdict_status is None:
            raise ValueError("verdict: call Report.verdict(...) before save()")
        runtime = time.perf_counter() - self._start
        self.blas_threads = blas_threads()
        threads = f"{self.blas_threads} BLAS thread{'s' if self.blas_threads != 1 else ''}"
        head = (
            f"# {self.title}\n\n**Claim tested.** {self.claim}\n\n"
            + _protocol_markdown(
                self.paper_claims, self.criteria, self.measures, self.sanity_checks
            )
            + f"**Verdict: {self.verdict_status}.** {self.verdict_detail}\n\n"
            f"Seed {self.seed}; run time {runtime:.1f} s ({threads}); minifim {__version__}"
            f"{'; QUICK mode' if quick() else ''}.\n\n"
        )
        atomic_write_text(self.dir / "report.md", head + "\n".join(self._parts))
        summary = {
            "name": self.name,
            "title": self.title,
            "claim": self.claim,
            "verdict": self.verdict_status,
            "detail": self.verdict_detail,
            "seed": self.seed,
            "runtime_seconds": round(runtime, 2),
            "blas_threads": self.blas_threads,
            "minifim_version": __version__,
            "quick": quick(),
            "figures": self._figures,
            "figure_captions": self._captions,
            "paper_claims": self.paper_claims,
            "criteria": self.criteria,
            "measures": self.measures,
            "sanity_checks": self.sanity_checks,
        }
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(
            f"[{self.name}] {self.verdict_status}: {self.verdict_detail} "
            f"({runtime:.1f} s, {threads}) -> {self.dir / 'report.md'}"
        )
        return self.dir / "report.md"


def write_index(root: str | os.PathLike[str] | None = None) -> Path:
    """Write ``<root>/README.md``: one section per experiment with its figures inline."""
    root = Path(root) if root is not None else results_root()
    summaries = []
    for path in sorted(root.glob("*/summary.json")):
        summaries.append(json.loads(path.read_text()))
    lines = [
        "# minifim experiments\n",
        "Generated by `make experiments` (`python -m minifim.tools.report index`). Each "
        "section states the claim tested, the verdict with its numbers, and links the full "
        "report.\n",
    ]
    rows = [
        (
            s["name"],
            s["verdict"],
            f"{s['runtime_seconds']:.1f}",
            s.get("blas_threads", "-"),
            s["seed"],
        )
        for s in summaries
    ]
    lines.append(
        markdown_table(["experiment", "verdict", "run time (s)", "BLAS threads", "seed"], rows)
    )
    if summaries:
        total = sum(float(s["runtime_seconds"]) for s in summaries)
        modes = sorted({"QUICK" if s.get("quick") else "full" for s in summaries})
        lines.append(
            f"Total run time {total:.0f} s ({total / 60:.1f} min) over {len(summaries)} "
            f"experiments, {' and '.join(modes)} mode.\n"
        )
    for s in summaries:
        lines.append(f"## {s['title']}\n")
        lines.append(f"**Claim tested.** {s['claim']}\n")
        missing = [
            what
            for what, key in (("paper's claim", "paper_claims"), ("criterion", "criteria"))
            if not s.get(key)
        ]
        lines.append(
            _protocol_markdown(
                s.get("paper_claims", []),
                s.get("criteria", []),
                s.get("measures", []),
                s.get("sanity_checks", []),
            )
        )
        if missing:
            lines.append(f"*Not stated by this experiment: {', '.join(missing)}.*\n")
        lines.append(f"**Verdict: {s['verdict']}.** {s['detail']}\n")
        lines.append(
            f"Seed {s['seed']}, run time {s['runtime_seconds']:.1f} s, minifim "
            f"{s['minifim_version']}{', QUICK mode' if s.get('quick') else ''}. "
            f"[Full report]({s['name']}/report.md)\n"
        )
        captions = s.get("figure_captions", {})
        for fig in s.get("figures", []):
            lines.append(f"![{captions.get(fig, fig)}]({s['name']}/{fig})\n")
            if fig in captions:
                lines.append(f"*{captions[fig]}*\n")
    return atomic_write_text(root / "README.md", "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["index"]:
        path = write_index(argv[1] if len(argv) > 1 else None)
        print(f"wrote {path}")
        return 0
    print("usage: python -m minifim.tools.report index [RESULTS_DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
