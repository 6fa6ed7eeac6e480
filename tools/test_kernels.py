"""Run the test suite under every OpenBLAS kernel and BLAS thread count; print a table.

The suite's tolerances come from error analysis (tests/tolerances.py) and must hold for any
correctly rounded BLAS: this script checks it on the kernels OpenBLAS may pick on a user's
machine (``OPENBLAS_CORETYPE``; ``unset`` lets OpenBLAS detect the CPU, with
``OPENBLAS_L2_SIZE`` unset too) with 1 and 2 threads. Usage (``make test-kernels``)::

    python tools/test_kernels.py [--kernels Haswell,Nehalem] [--threads 1,2] [pytest args...]

Exit status 0 when every cell passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

KERNELS = (
    "Haswell",
    "Zen",
    "Sandybridge",
    "Prescott",
    "Nehalem",
    "SkylakeX",
    "Cooperlake",
    "unset",
)
THREADS = (1, 2)
_COUNT = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


def junit_counts(path: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, "error": n, "skipped": n}`` from a pytest JUnit XML report
    (independent of the verbosity: ``addopts = -q`` plus ``-q`` drops the summary line)."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    return {
        "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
        "failed": total["failures"],
        "error": total["errors"],
        "skipped": total["skipped"],
    }


def summary_counts(output: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, ...}`` from pytest's final summary line (fallback)."""
    lines = [l for l in output.splitlines() if _COUNT.search(l)]
    counts: dict[str, int] = {}
    for n, key in _COUNT.findall(lines[-1] if lines else ""):
        key = "error" if key == "errors" else key
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def run_cell(kernel: str, threads: int, pytest_args: list[str]) -> tuple[dict, str, float]:
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        MPLBACKEND="Agg",
    )
    if kernel == "unset":
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    else:
        env["OPENBLAS_CORETYPE"] = kernel
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfE",
            f"--junitxml={xml}",
            *pytest_args,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        counts = junit_counts(xml) if os.path.exists(xml) else summary_counts(out)
    if proc.returncode != 0 and not counts.get("failed") and not counts.get("error"):
        counts["error"] = 1  # pytest itself failed (collection, crash): not a green cell
    return counts, out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--threads", default=",".join(map(str, THREADS)))
    args, pytest_args = parser.parse_known_args(argv)
    kernels = [k for k in args.kernels.split(",") if k]
    threads = [int(t) for t in args.threads.split(",") if t]
    pytest_args = pytest_args or ["tests"]
    rows, failures = [], []
    for kernel in kernels:
        for t in threads:
            counts, out, secs = run_cell(kernel, t, pytest_args)
            bad = counts.get("failed", 0) + counts.get("error", 0)
            rows.append((kernel, t, counts.get("passed", 0), bad, secs))
            print(
                f"{kernel:12s} threads={t}: {counts.get('passed', 0)} passed, {bad} failed "
                f"({secs:.0f} s)",
                flush=True,
            )
            if bad:
                failed = [l for l in out.splitlines() if l.startswith(("FAILED", "ERROR"))]
                failures.append((kernel, t, failed or out.splitlines()[-20:]))
    print()
    print(
        f"{'kernel':12s} "
        + " ".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>20s}" for t in threads)
    )
    for kernel in kernels:
        cells = [f"{p} passed/{b} failed" for k, t, p, b, _ in rows if k == kernel]
        print(f"{kernel:12s} " + " ".join(f"{c:>20s}" for c in cells))
    for kernel, t, lines in failures:
        print(f"\n{kernel}, {t} thread(s):")
        for line in lines:
            print("  " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
