"""Continual learning on permuted digits: EWC against fine-tuning and L2; separate vs recursive.

Claims tested (in the papers' terms):

- Kirkpatrick et al. 2017 (PNAS, Fig. 2A and Sec. "EWC extends to supervised learning"): EWC
  "protects old tasks" where plain SGD (fine-tuning) forgets them, while an L2 penalty to the old
  solution "is too rigid": it protects old tasks at the price of not learning new ones.
- Huszar 2018 (PNAS letter, "Note on the quadratic penalties in elastic weight consolidation"):
  the sum of one penalty per task counts old tasks' evidence more than once; the correct
  recursive Laplace penalty is one quadratic at the latest solution with the summed precision.

Set-up: digits (scikit-learn), 5 permuted tasks (the first the identity), MLP [64, H, 10] tanh,
Adam on mini-batches (:func:`minifim.train`), each task starting from the previous solution.
Methods: fine-tuning; L2 to the previous solution; EWC with the diagonal true Fisher, separate
penalties (Kirkpatrick) and recursive (Huszar); joint training (reference). Every seed draws its
own train / validation / test split, permutations, initialisation and batch order; each method's
strength is selected per seed on that seed's VALIDATION final average accuracy from a grid of
the same size for every tuned method, widened by a decade (at most ``MAX_WIDEN`` times, the same
budget for all) while a seed's selection sits on the grid's edge. Verdict from 95% paired
t-intervals over seeds: :func:`continual_verdict` (tested in tests/test_experiment_continual_
learning.py).

Run: ``MPLBACKEND=Agg python experiments/continual_learning.py`` (``QUICK=1``: small network,
few steps, 2 seeds). Measured on 2 cores (1 BLAS thread), load average about 2: full 61 s (85 runs),
QUICK 3 s (50 s and 5 s under load average 4-9).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import minifim
from minifim import data as mdata
from minifim.tools.report import Report, paired_t_interval, quick, t_interval

SEED = 0
QUICK = quick()
# small dense products dominate: BLAS threads only add overhead (see minifim.tools.report)
BLAS_THREADS = 1
CFG = {
    "hidden": 8 if QUICK else 20,
    "steps": 30 if QUICK else 200,
    "batch_size": 32,
    "lr": 1e-2 if QUICK else 5e-3,
    "max_train": 300 if QUICK else None,
    "seeds": [1, 2] if QUICK else [1, 2, 3, 4, 5],
    "grid_ewc": [1.0, 100.0] if QUICK else [0.1, 1.0, 10.0, 100.0, 1e3],
    "grid_l2": [1e-3, 1e-1] if QUICK else [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
}
MAX_WIDEN = 1 if QUICK else 2
N_TASKS = 5
METHODS = {
    "fine-tuning": None,
    "L2": "l2",
    "EWC separate": {"structure": "diag", "fisher": "true", "mode": "separate"},
    "EWC recursive": {"structure": "diag", "fisher": "true", "mode": "recursive"},
    "joint": "joint",
}
TUNED = ("L2", "EWC separate", "EWC recursive")


def make_tasks(seed):
    """Five permuted tasks ``(X_tr, y_tr, X_va, y_va, X_te, y_te)`` from one seed's split."""
    X, y = mdata.load_digits()
    Xtr, ytr, Xte, yte = mdata.train_test_split(X, y, 0.25, rng=np.random.default_rng([seed, 0]))
    Xtr, ytr, Xva, yva = mdata.train_test_split(Xtr, ytr, 0.2, rng=np.random.default_rng([seed, 1]))
    if CFG["max_train"] is not None:
        Xtr, ytr = Xtr[: CFG["max_train"]], ytr[: CFG["max_train"]]
    perms = mdata.permuted_tasks(X, N_TASKS, rng=np.random.default_rng([seed, 2]))
    return [(Xtr[:, p], ytr, Xva[:, p], yva, Xte[:, p], yte) for p in perms]


def run(method, strength, seed, tasks):
    """Learn the tasks in order; ``(R_val, R_test)`` with ``R[t, i]`` the accuracy on task i
    after learning task t."""
    spec = METHODS[method]
    net = minifim.MLP([64, CFG["hidden"], 10], activation="tanh", likelihood="categorical")
    rng = np.random.default_rng([seed, 3])
    theta = net.init(rng)
    ewc = minifim.EWC(net, strength=strength, **spec) if isinstance(spec, dict) else None
    R_val, R_test = np.zeros((2, N_TASKS, N_TASKS))
    seen_X, seen_y = [], []
    for t, (Xtr, ytr, *_) in enumerate(tasks):
        penalty = ewc
        if spec == "l2" and t > 0:  # identity precision at the previous solution
            prev = minifim.EWCTask(theta.copy(), len(tasks[t - 1][0]), np.ones(net.num_params))
            penalty = minifim.EWC(net, strength=strength, tasks=[prev])
        if spec == "joint":
            seen_X.append(Xtr)
            seen_y.append(ytr)
            Xtr, ytr = np.concatenate(seen_X), np.concatenate(seen_y)
        theta, _ = minifim.train(
            net,
            theta,
            Xtr,
            ytr,
            minifim.optim.adam(CFG["lr"]),
            CFG["steps"],
            batch_size=min(CFG["batch_size"], len(Xtr)),
            rng=rng,
            penalty=penalty,
            progress=False,
        )
        if ewc is not None and t < N_TASKS - 1:
            ewc.add_task(theta, Xtr, ytr)
        for i, (_, _, Xva, yva, Xte, yte) in enumerate(tasks):
            R_val[t, i] = minifim.accuracy(net, theta, Xva, yva)
            R_test[t, i] = minifim.accuracy(net, theta, Xte, yte)
    return R_val, R_test


def final_average(R):
    """Mean accuracy over all tasks after the last one."""
    return float(R[-1].mean())


def plasticity(R):
    """Mean over tasks 2..T of the accuracy just after learning the task (learning new tasks)."""
    return float(np.mean(np.diag(R)[1:]))


def forgetting(R):
    """Mean over tasks 1..T-1 of (accuracy just after learning it - final accuracy)."""
    return float(np.mean([R[i, i] - R[-1, i] for i in range(N_TASKS - 1)]))


# --- the criterion (pure; tested both ways in the suite) --------------------------------------
def interval_sign(low, high):
    """+1 if an interval lies above 0, -1 if below, 0 if it contains 0."""
    return 1 if low > 0 else (-1 if high < 0 else 0)


def continual_verdict(ewc, fine_tuning, l2, recursive, plast_ewc, plast_l2, level=0.95):
    """The verdict from per-seed results (arrays over the same seeds).

    Parts, each decided by a paired t-interval at ``level`` of a per-seed difference:

    - ``"EWC > fine-tuning"``: final average accuracy (Kirkpatrick: EWC protects old tasks);
    - ``"EWC > L2"``: final average accuracy;
    - ``"L2 less plastic than EWC"``: plasticity ``plast_ewc - plast_l2`` (L2 "too rigid");
    - ``"recursive > separate"``: final average accuracy (Huszar: the recursive penalty is the
      correct one, the separate penalties double count).

    Returns ``(status, parts)`` with ``parts[name] = (sign, (mean, low, high))``, sign from
    :func:`interval_sign`; ``status`` "agrees" if every part is +1, "disagrees" if any is -1,
    else "inconclusive".
    """
    pairs = {
        "EWC > fine-tuning": (ewc, fine_tuning),
        "EWC > L2": (ewc, l2),
        "L2 less plastic than EWC": (plast_ewc, plast_l2),
        "recursive > separate": (recursive, ewc),
    }
    parts = {}
    for name, (a, b) in pairs.items():
        ci = paired_t_interval(a, b, level)
        parts[name] = (interval_sign(ci[1], ci[2]), ci)
    signs = [s for s, _ in parts.values()]
    status = (
        "agrees" if all(s == 1 for s in signs) else "disagrees" if -1 in signs else "inconclusive"
    )
    return status, parts


# --- tuning ---------------------------------------------------------------------------------
def tune(method, all_tasks, bar):
    """Validation scores per seed and strength, widening the grid on edge selections."""
    grid = list(CFG["grid_l2"] if METHODS[method] == "l2" else CFG["grid_ewc"])
    runs = {}  # strength -> [(R_val, R_test) per seed]

    def evaluate(s):
        if s not in runs:
            runs[s] = []
            for seed, tasks in zip(CFG["seeds"], all_tasks):
                bar.set_postfix_str(f"{method} s={s:g} seed={seed}")
                runs[s].append(run(method, s, seed, tasks))
                bar.update()

    for s in grid:
        evaluate(s)
    widened = 0
    while True:
        best = [max(grid, key=lambda s: runs[s][k][0][-1].mean()) for k in range(len(all_tasks))]
        low, high = any(b == grid[0] for b in best), any(b == grid[-1] for b in best)
        if widened >= MAX_WIDEN or not (low or high):
            break
        widened += 1
        bar.total += len(all_tasks) * (int(low) + int(high))
        if low:
            grid.insert(0, grid[0] / 10)
            evaluate(grid[0])
        if high:
            grid.append(grid[-1] * 10)
            evaluate(grid[-1])
    best = [max(grid, key=lambda s: runs[s][k][0][-1].mean()) for k in range(len(all_tasks))]
    return grid, runs, best


# --- figures ---------------------------------------------------------------------------------
def plot_tuning(tuned, n_seeds):
    fig, axes = plt.subplots(1, len(TUNED), figsize=(14, 4.0))
    for ax, m in zip(axes, TUNED):
        grid, runs, best = tuned[m]
        val = np.array([[final_average(r[0]) for r in runs[s]] for s in grid])  # (G, seeds)
        ci = np.array([t_interval(v) if n_seeds > 1 else (v[0],) * 3 for v in val])
        ax.semilogx(grid, ci[:, 0], "o-", label="validation final avg accuracy (mean)")
        ax.fill_between(grid, ci[:, 1], ci[:, 2], alpha=0.25, label="95% t-interval")
        for k, b in enumerate(best):
            ax.axvline(
                b, color="k", ls=":", lw=0.8, label="selected (per seed)" if k == 0 else None
            )
        ax.set(xlabel="penalty strength (summed-NLL scale, dimensionless)", title=m)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final average validation accuracy (fraction)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Strength selection on validation data ({n_seeds} seeds, own splits)")
    fig.tight_layout()
    return fig


def plot_curves(test_runs, n_seeds):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    x = np.arange(1, N_TASKS + 1)
    for m, Rs in test_runs.items():
        Rs = np.stack(Rs)  # (seeds, T, T)
        avg = np.array([[R[t, : t + 1].mean() for t in range(N_TASKS)] for R in Rs])
        t1 = Rs[:, :, 0]
        for ax, v in zip(axes, (avg, t1)):
            m_ = v.mean(0)
            s_ = v.std(0, ddof=1) if n_seeds > 1 else np.zeros_like(m_)
            ax.plot(x, m_, "o-", ms=3, label=m)
            ax.fill_between(x, m_ - s_, m_ + s_, alpha=0.15, lw=0)
    axes[0].set(
        xlabel="tasks learnt",
        ylabel="test accuracy averaged over tasks learnt (fraction)",
        title="Average accuracy (mean +- 1 sd over seeds)",
        ylim=(0, 1.02),
    )
    axes[1].set(
        xlabel="tasks learnt",
        ylabel="test accuracy on task 1 (fraction)",
        title="Retention of task 1",
        ylim=(0, 1.02),
    )
    for ax in axes:
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_parts(parts):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = list(parts)
    for k, n in enumerate(names):
        _, (m, lo, hi) = parts[n]
        ax.errorbar(m, k, xerr=[[m - lo], [hi - m]], fmt="o", capsize=4)
    ax.axvline(0.0, color="k", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("paired difference of accuracy (fraction), mean and 95% t-interval")
    ax.set_title("Criterion: every interval above 0 = agrees")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# --- main ------------------------------------------------------------------------------------
def main():
    report = Report(
        "continual_learning",
        "Continual learning: EWC vs fine-tuning and L2; separate vs recursive penalties",
        "EWC retains old tasks better than fine-tuning and than a too-rigid L2 penalty "
        "(Kirkpatrick et al. 2017); the recursive penalty, not the sum of separate ones, is the "
        "correct Laplace approximation (Huszar 2018).",
        SEED,
    )
    report.paper_claim(
        "EWC protects the performance on old tasks where plain SGD forgets them; an L2 penalty "
        "to the old parameters is too rigid: it protects old tasks but fails to learn new ones.",
        "Kirkpatrick et al. 2017, PNAS, Fig. 2A (permuted MNIST)",
    )
    report.paper_claim(
        "With more than two tasks the separate penalties count the old tasks' data more than "
        "once; the recursive penalty (one quadratic at the latest solution with the summed "
        "precision) is the correct Laplace approximation.",
        "Huszar 2018, PNAS 115(11) E2496 (letter), Eqs. 3-5",
    )
    report.criterion(
        "continual_verdict: 95% paired t-intervals over seeds (each its own split, "
        "permutations, initialisation, strength tuned on its own validation data) of "
        "(EWC - fine-tuning) and (EWC - L2) final average test accuracy, (EWC - L2) plasticity, "
        "(recursive - separate) final average test accuracy; agrees if all lie above 0, "
        "disagrees if any lies below 0, else inconclusive."
    )
    all_tasks = [make_tasks(s) for s in CFG["seeds"]]
    n = len(CFG["seeds"])
    n_runs = n * (2 + len(CFG["grid_l2"]) + 2 * len(CFG["grid_ewc"]))
    bar = tqdm(total=n_runs, desc="continual_learning runs")
    tuned = {m: tune(m, all_tasks, bar) for m in TUNED}
    test_runs = {}
    for m in METHODS:
        if m in TUNED:
            grid, runs, best = tuned[m]
            test_runs[m] = [runs[b][k][1] for k, b in enumerate(best)]
        else:
            res = []
            for seed, tasks in zip(CFG["seeds"], all_tasks):
                bar.set_postfix_str(f"{m} seed={seed}")
                res.append(run(m, 0.0, seed, tasks)[1])
                bar.update()
            test_runs[m] = res
    bar.close()

    acc = {m: np.array([final_average(R) for R in Rs]) for m, Rs in test_runs.items()}
    plast = {m: np.array([plasticity(R) for R in Rs]) for m, Rs in test_runs.items()}
    fgt = {m: np.array([forgetting(R) for R in Rs]) for m, Rs in test_runs.items()}
    task1 = {m: np.array([R[-1, 0] for R in Rs]) for m, Rs in test_runs.items()}

    report.section(
        "Set-up",
        f"MLP [64, {CFG['hidden']}, 10] tanh; Adam lr {CFG['lr']}, {CFG['steps']} steps of "
        f"mini-batches of {CFG['batch_size']} per task; {len(all_tasks[0][0][0])} training, "
        f"{len(all_tasks[0][0][2])} validation, {len(all_tasks[0][0][4])} test digits per task "
        f"per seed; seeds {CFG['seeds']} (each: split, permutations, initialisation, batch "
        f"order). Strength: precision strength * N_t * F_t (EWC, diagonal true Fisher) or "
        f"strength * N_t * I (L2), added to the summed NLL (1 = the Laplace value). Initial "
        f"grids: EWC {CFG['grid_ewc']}, L2 {CFG['grid_l2']}; widened by a decade at most "
        f"{MAX_WIDEN} times on an edge selection (the same budget for every tuned method).",
    )
    rows = []
    for m in TUNED:
        grid, _, best = tuned[m]
        edge = sum(b in (grid[0], grid[-1]) for b in best)
        rows.append((m, ", ".join(f"{g:g}" for g in grid), ", ".join(f"{b:g}" for b in best), edge))
    report.table(["method", "grid evaluated", "selected per seed", "seeds on an edge"], rows)

    def ci(x):
        return t_interval(x) if n > 1 else (float(x[0]),) * 3

    rows = []
    for m in METHODS:
        cells = [m]
        for q in (acc, plast, fgt, task1):
            mean, lo, hi = ci(q[m])
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
        rows.append(cells)
    report.section("Test accuracy (mean and 95% t-interval over seeds)")
    report.table(
        [
            "method",
            "final average",
            "plasticity (tasks 2-5 just learnt)",
            "forgetting",
            "task 1 at the end",
        ],
        rows,
    )
    if n > 1:
        for m in METHODS:
            report.measure(
                f"final average test accuracy, {m}",
                *t_interval(acc[m]),
                n=n,
                interval=f"95% t over {n} seeds",
            )
        for m in ("EWC separate", "L2"):
            report.measure(
                f"plasticity, {m}", *t_interval(plast[m]), n=n, interval=f"95% t over {n} seeds"
            )
    report.figure(
        plot_tuning(tuned, n),
        "tuning.png",
        "Validation final average accuracy against strength (log axis), mean and 95% "
        "band over seeds; dotted: per-seed selections",
    )
    report.figure(
        plot_curves(test_runs, n),
        "curves.png",
        "Test accuracy as tasks are added: average over the tasks learnt and task 1 "
        "(mean +- 1 sd over seeds)",
    )

    # Huszar: where do separate and recursive differ at equal strength (validation)?
    common = [s for s in tuned["EWC separate"][0] if s in tuned["EWC recursive"][0]]
    eq_rows = []
    for s in common:
        a = [final_average(r[0]) for r in tuned["EWC recursive"][1][s]]
        b = [final_average(r[0]) for r in tuned["EWC separate"][1][s]]
        t1a = [r[0][-1, 0] for r in tuned["EWC recursive"][1][s]]
        t1b = [r[0][-1, 0] for r in tuned["EWC separate"][1][s]]
        d = paired_t_interval(a, b) if n > 1 else (a[0] - b[0],) * 3
        d1 = paired_t_interval(t1a, t1b) if n > 1 else (t1a[0] - t1b[0],) * 3
        eq_rows.append(
            (
                f"{s:g}",
                f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]",
                f"{d1[0]:+.3f} [{d1[1]:+.3f}, {d1[2]:+.3f}]",
                interval_sign(d[1], d[2]),
            )
        )
    report.section(
        "Recursive vs separate at equal strength (validation)",
        "Paired differences recursive - separate over seeds; the double counting of the separate "
        "penalties pulls the centre towards old solutions (task 1 retention column).",
    )
    report.table(
        [
            "strength",
            "final average: recursive - separate",
            "task 1 at the end: recursive - separate",
            "interval sign",
        ],
        eq_rows,
    )
    measurable = [r[0] for r in eq_rows if r[3] != 0]

    if n > 1:
        status, parts = continual_verdict(
            acc["EWC separate"],
            acc["fine-tuning"],
            acc["L2"],
            acc["EWC recursive"],
            plast["EWC separate"],
            plast["L2"],
        )
        for name, (_, c) in parts.items():
            report.measure(
                f"paired difference: {name}", *c, n=n, interval=f"95% paired t over {n} seeds"
            )
        report.figure(
            plot_parts(parts),
            "criterion.png",
            "The verdict's paired differences (accuracy fraction) with 95% t-intervals",
        )
    else:
        status, parts = "inconclusive", {}
    words = {
        1: "holds (interval above 0)",
        0: "not resolved (interval contains 0)",
        -1: "is CONTRADICTED (interval below 0)",
    }
    lines = [
        f"{name} {words[s]}: {c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]"
        for name, (s, c) in parts.items()
    ]
    if parts and parts["L2 less plastic than EWC"][0] == -1:
        lines.append(
            f"the data contradict 'L2 is too rigid': L2 learns new tasks better "
            f"(plasticity {plast['L2'].mean():.3f} vs EWC {plast['EWC separate'].mean():.3f})"
        )
    lines.append(
        "separate and recursive penalties differ measurably at equal strength on validation at "
        + (", ".join(measurable) if measurable else "no strength of the grid")
    )
    if QUICK:
        status = "inconclusive"
        lines.insert(0, "QUICK mode (2 seeds, tiny network): not evidence")
    report.verdict(status, "; ".join(lines) + ".")
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
