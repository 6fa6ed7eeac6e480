"""Continual learning on digits: does EWC keep old tasks, and what do the wrong Fishers cost?

Claim tested (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks"):
a quadratic penalty weighted by the Fisher of earlier tasks (EWC) retains performance on old
tasks where plain fine-tuning forgets them, while an unweighted L2 penalty to the old solution
is too rigid to learn new tasks and retain old ones at once.

Set-up (every number below is printed in the report):

- data: scikit-learn's bundled ``load_digits`` (8 x 8 images in [0, 1]); one fixed split into
  train / validation / test (seed 0);
- permuted digits: 5 tasks, all 10 classes, each with a fixed pixel permutation (the first the
  identity); split digits: 5 tasks of 2 classes (0/1, 2/3, ..., 8/9) with a shared 2-way output
  "first or second digit of the pair" (the domain-incremental scenario);
- model: MLP ``[64, H, C]`` (tanh), categorical likelihood, trained per task by Adam on
  mini-batches through :func:`minifim.train`, continuing from the previous task's solution;
- methods: fine-tuning; L2 to the previous solution; EWC (separate penalties) with the diagonal
  of the true, the empirical and the square-of-mean-gradient Fisher (mini-batches of the
  training batch size, as ``loss.backward(); p.grad ** 2`` on a data loader gives), with K-FAC
  and with the full Fisher; online EWC (diagonal, gamma = 0.9); the recursive Laplace
  approximation (full true Fisher, Huszar 2018); joint training on all tasks so far (upper
  bound);
- strength: chosen per method from a stated grid by the final average validation accuracy over
  all tasks with selection seed 0; then 3 evaluation seeds (initialisation and mini-batch
  order) report test accuracy, mean and spread.

Run: ``MPLBACKEND=Agg python experiments/continual_learning.py`` (``QUICK=1``: a small network,
few steps, 2 strengths, 1 seed, a subset of the data).
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import minifim
from minifim import data as mdata
from minifim.methods.ewc import quadratic_penalty, quadratics
from minifim.tools.report import Report, quick

SEED = 0
QUICK = quick()
# BLAS threads for main(): small dense solves and products dominate, where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: QUICK: 7.3 s with 2 free
# threads, 8.1 s with one, on an idle machine.
BLAS_THREADS = 1
CFG = {
    "hidden": 8 if QUICK else 20,
    "steps": 30 if QUICK else 250,  # Adam steps per task
    "batch_size": 32,
    "lr": 1e-2 if QUICK else 5e-3,
    "max_train": 400 if QUICK else None,  # training samples (None: all)
    "grid": [10.0, 1000.0] if QUICK else [1.0, 10.0, 100.0, 1e3, 1e4],
    "grid_l2": [1e-3, 1e-1] if QUICK else [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
    "select_seed": 0,
    "eval_seeds": [1] if QUICK else [1, 2, 3],
    "gamma": 0.9,
}
N_TASKS = 5

# name -> EWC configuration (None: no penalty; "l2" / "joint": the baselines)
METHODS = {
    "fine-tuning": None,
    "L2": "l2",
    "EWC diag true": {"structure": "diag", "fisher": "true"},
    "EWC diag empirical": {"structure": "diag", "fisher": "empirical"},
    "EWC diag sq-mean-grad": {
        "structure": "diag",
        "fisher": "square_of_mean_gradient",
        "batch_size": CFG["batch_size"],
    },
    "EWC K-FAC": {"structure": "kfac", "fisher": "true"},
    "EWC full": {"structure": "full", "fisher": "true"},
    "online EWC": {"structure": "diag", "fisher": "true", "mode": "online", "gamma": CFG["gamma"]},
    "recursive Laplace": {"structure": "full", "fisher": "true", "mode": "recursive"},
    "joint": "joint",
}


# --- tasks -----------------------------------------------------------------------------------
def make_benchmarks():
    """Per benchmark: (number of classes, [(X_tr, y_tr, X_va, y_va, X_te, y_te)] * 5)."""
    X, y = mdata.load_digits()
    Xtr, ytr, Xte, yte = mdata.train_test_split(X, y, test_fraction=0.25, rng=SEED)
    Xtr, ytr, Xva, yva = mdata.train_test_split(Xtr, ytr, test_fraction=0.2, rng=SEED + 1)
    if CFG["max_train"] is not None:
        Xtr, ytr = Xtr[: CFG["max_train"]], ytr[: CFG["max_train"]]
    perms = mdata.permuted_tasks(X, N_TASKS, rng=SEED)
    permuted = [(Xtr[:, p], ytr, Xva[:, p], yva, Xte[:, p], yte) for p in perms]
    groups = [(2 * t, 2 * t + 1) for t in range(N_TASKS)]
    split = []
    for g, itr, iva, ite in zip(
        groups,
        mdata.split_tasks(ytr, groups),
        mdata.split_tasks(yva, groups),
        mdata.split_tasks(yte, groups),
    ):
        split.append(
            (Xtr[itr], ytr[itr] - g[0], Xva[iva], yva[iva] - g[0], Xte[ite], yte[ite] - g[0])
        )
    return {"permuted digits": (10, permuted), "split digits": (2, split)}


# --- one sequential run ------------------------------------------------------------------------
def run(method, strength, seed, n_classes, tasks):
    """Learn the tasks in order; return ``(R_val, R_test, ratio)``: ``R[t, i]`` = accuracy on
    task i after learning task t; ``ratio`` = the rise of task 1's summed NLL from its solution
    to the final parameters divided by the rise the method's own quadratic model of task 1
    predicts (``1/2 N_1 d^T F_1 d``, strength 1; NaN without an EWC record)."""
    spec = METHODS[method]
    net = minifim.MLP([64, CFG["hidden"], n_classes], activation="tanh", likelihood="categorical")
    rng = np.random.default_rng([seed, 1])
    theta = net.init(rng)
    ewc = None
    if isinstance(spec, dict):
        ewc = minifim.EWC(net, strength=strength, **spec)
    R_val, R_test = np.zeros((2, N_TASKS, N_TASKS))
    seen_X, seen_y = [], []
    for t, (Xtr, ytr, *_) in enumerate(tasks):
        penalty = ewc
        if spec == "l2" and t > 0:  # identity "curvature" at the previous solution
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
    ratio = np.nan
    if ewc is not None:
        rec, (X1, y1) = ewc.tasks[0], tasks[0][:2]
        actual = minifim.loss(net, theta, X1, y1, reduction="sum") - minifim.loss(
            net, rec.theta_star, X1, y1, reduction="sum"
        )
        model = quadratic_penalty(quadratics([rec], ewc.structure), ewc.structure, theta)
        ratio = actual / model
    return R_val, R_test, ratio


def final_average(R):
    return float(R[-1].mean())


def forgetting(R):
    """Mean over tasks 1..4 of (accuracy just after learning it - final accuracy)."""
    return float(np.mean([R[i, i] - R[-1, i] for i in range(N_TASKS - 1)]))


def grid_of(method):
    spec = METHODS[method]
    if spec is None or spec == "joint":
        return [0.0]
    return CFG["grid_l2"] if spec == "l2" else CFG["grid"]


# --- figures -------------------------------------------------------------------------------------
def plot_curves(bench, results):
    fig, axes = plt.subplots(2, 5, figsize=(17, 6.4), sharex=True, sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, N_TASKS))
    for ax, method in zip(axes.ravel(), METHODS):
        Rs = np.stack(results[method]["test"])  # (seeds, T, T)
        for i in range(N_TASKS):
            x = np.arange(i, N_TASKS) + 1
            m, s = Rs[:, i:, i].mean(axis=0), Rs[:, i:, i].std(axis=0)
            ax.plot(x, m, "o-", color=colors[i], ms=3, label=f"task {i + 1}")
            ax.fill_between(x, m - s, m + s, color=colors[i], alpha=0.2, lw=0)
        avg = np.array([Rs[:, t, : t + 1].mean(axis=1) for t in range(N_TASKS)])  # (T, seeds)
        ax.plot(np.arange(1, N_TASKS + 1), avg.mean(axis=1), "k--", lw=1.5, label="average")
        ax.set_title(f"{method} (s={results[method]['strength']:g})", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("tasks learnt")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{bench}: accuracy on each task as tasks are added (mean +- std over "
        f"{len(CFG['eval_seeds'])} seeds)"
    )
    fig.tight_layout()
    return fig


def plot_summary(summary):
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
    names = list(METHODS)
    x = np.arange(len(names))
    w = 0.38
    for k, (bench, rows) in enumerate(summary.items()):
        acc = np.array([rows[m]["acc"] for m in names])  # (methods, seeds)
        fgt = np.array([rows[m]["fgt"] for m in names])
        axes[0].bar(x + (k - 0.5) * w, acc.mean(1), w, yerr=acc.std(1), capsize=2, label=bench)
        axes[1].bar(x + (k - 0.5) * w, fgt.mean(1), w, yerr=fgt.std(1), capsize=2, label=bench)
    for ax, lab in zip(
        axes, ["final average test accuracy", "forgetting (after learning - final)"]
    ):
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(lab)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Final average accuracy by method / Fisher variant")
    axes[1].set_title("Forgetting by method / Fisher variant")
    fig.tight_layout()
    return fig


# --- main ------------------------------------------------------------------------------------
def main():
    start = time.perf_counter()
    report = Report(
        "continual_learning",
        "Continual learning: EWC and its Fisher variants on digits",
        "Kirkpatrick et al. (2017): EWC, a quadratic penalty weighted by the Fisher of earlier "
        "tasks, retains old tasks where fine-tuning forgets them, while an unweighted L2 penalty "
        "to the old solution is too rigid.",
        SEED,
    )
    benchmarks = make_benchmarks()
    jobs = [(b, m, s) for b in benchmarks for m in METHODS for s in grid_of(m)]
    jobs += [(b, m, None) for b in benchmarks for m in METHODS for _ in CFG["eval_seeds"]]
    bar = tqdm(total=len(jobs), desc="continual_learning runs")

    selection, results, summary = {}, {}, {}
    for bench, (C, tasks) in benchmarks.items():
        selection[bench], results[bench], summary[bench] = {}, {}, {}
        for method in METHODS:
            scores = {}
            for s in grid_of(method):
                bar.set_postfix_str(f"{bench[:5]} {method} s={s:g}")
                R_val, _, _ = run(method, s, CFG["select_seed"], C, tasks)
                scores[s] = final_average(R_val)
                bar.update()
            best = max(scores, key=scores.get)
            selection[bench][method] = scores
            res = {"strength": best, "test": [], "val": [], "ratio": []}
            for seed in CFG["eval_seeds"]:
                bar.set_postfix_str(f"{bench[:5]} {method} seed={seed}")
                R_val, R_test, ratio = run(method, best, seed, C, tasks)
                res["ratio"].append(ratio)
                res["test"].append(R_test)
                res["val"].append(R_val)
                bar.update()
            results[bench][method] = res
            summary[bench][method] = {
                "acc": [final_average(R) for R in res["test"]],
                "fgt": [forgetting(R) for R in res["test"]],
                "new": [float(np.mean(np.diag(R))) for R in res["test"]],
            }
    bar.close()

    # --- report ---------------------------------------------------------------------------------
    P = {
        b: (64 * CFG["hidden"] + CFG["hidden"]) + (CFG["hidden"] + 1) * C
        for b, (C, _) in benchmarks.items()
    }
    n_train = {b: [len(t[0]) for t in tasks] for b, (_, tasks) in benchmarks.items()}
    report.section(
        "Set-up",
        (
            f"MLP [64, {CFG['hidden']}, C] tanh, categorical likelihood (P = "
            f"{', '.join(f'{P[b]} ({b})' for b in P)}); Adam lr {CFG['lr']}, {CFG['steps']} steps "
            f"of mini-batches of {CFG['batch_size']} per task, each task starting from the previous "
            f"solution. Training samples per task: "
            f"{'; '.join(f'{b}: {n_train[b]}' for b in n_train)}. Strength grid (minifim's "
            f"summed-NLL scale, precision strength * N_t * F_t; 1 is the Laplace value): "
            f"{CFG['grid']} for every EWC variant, {CFG['grid_l2']} for L2 (precision strength * "
            f"N_t * I). Online EWC gamma = {CFG['gamma']}. Selection: final average validation "
            f"accuracy over all 5 tasks, seed {CFG['select_seed']}; evaluation seeds "
            f"{CFG['eval_seeds']} (initialisation and mini-batch order); data split and "
            f"permutations from seed {SEED}. Forgetting: mean over tasks 1-4 of the test accuracy "
            "just after learning the task minus the final one. Split digits is domain-incremental "
            "(one shared 2-way output: first or second digit of the pair)."
        ),
    )

    def ratio_text(bench, m):
        r = results[bench][m]["ratio"]
        return "-" if np.all(np.isnan(r)) else f"{np.mean(r):.3g}"

    for bench in benchmarks:
        rows = []
        for m in METHODS:
            r = summary[bench][m]
            rows.append(
                (
                    m,
                    f"{results[bench][m]['strength']:g}",
                    f"{np.mean(r['acc']):.3f} +- {np.std(r['acc']):.3f}",
                    f"{np.mean(r['fgt']):.3f} +- {np.std(r['fgt']):.3f}",
                    f"{np.mean(r['new']):.3f}",
                    ratio_text(bench, m),
                    ", ".join(f"{s:g}: {v:.3f}" for s, v in selection[bench][m].items()),
                )
            )
        report.section(f"{bench}: test accuracy (mean +- std over seeds)")
        report.table(
            [
                "method",
                "strength",
                "final avg acc",
                "forgetting",
                "acc just after learning (plasticity)",
                "task-1 NLL rise: actual / quadratic model",
                "validation score per strength",
            ],
            rows,
        )
        report.figure(
            plot_curves(bench, results[bench]),
            f"curves_{bench.split()[0]}.png",
            f"{bench}: test accuracy on each task as tasks are added, per method",
        )
    report.figure(
        plot_summary(summary),
        "summary.png",
        "Final average test accuracy and forgetting per method and Fisher variant "
        "(error bars: std over seeds)",
    )

    def mean(b, m, k="acc"):
        return float(np.mean(summary[b][m][k]))

    def spread(b, m):
        return float(np.std(summary[b][m]["acc"]))

    def task1(b, m):  # final test accuracy on task 1
        return float(np.mean([R[-1, 0] for R in results[b][m]["test"]]))

    lines = []
    for b in benchmarks:
        diag = mean(b, "EWC diag true")
        structured = max(("EWC K-FAC", "EWC full", "recursive Laplace"), key=lambda m: mean(b, m))
        gap = mean(b, structured) - diag
        label_gap = max(
            abs(mean(b, m) - diag) for m in ("EWC diag empirical", "EWC diag sq-mean-grad")
        )
        lead = (
            "Structure matters more than labels"
            if abs(gap) > label_gap
            else "The labels matter as much as the structure"
        )
        lines.append(
            f"- **{b}.** {lead}: the best structured penalty "
            f"({structured}, {mean(b, structured):.3f}) beats the true-Fisher diagonal "
            f"({diag:.3f}) by {mean(b, structured) - diag:+.3f}, while the empirical and "
            f"square-of-mean-gradient diagonals differ from it by "
            f"{mean(b, 'EWC diag empirical') - diag:+.3f} and "
            f"{mean(b, 'EWC diag sq-mean-grad') - diag:+.3f} (seed spreads "
            f"{spread(b, 'EWC diag empirical'):.3f}, {spread(b, 'EWC diag sq-mean-grad'):.3f}, "
            f"{spread(b, 'EWC diag true'):.3f}). Task 1 at the end: K-FAC {task1(b, 'EWC K-FAC'):.3f}, "
            f"full {task1(b, 'EWC full'):.3f}, recursive Laplace "
            f"{task1(b, 'recursive Laplace'):.3f}, diagonal {task1(b, 'EWC diag true'):.3f}. The "
            f"rise of task 1's NLL over its quadratic model (column above; 1 = the quadratic is "
            f"exact) is {ratio_text(b, 'EWC full')} for the full Fisher, "
            f"{ratio_text(b, 'EWC K-FAC')} for K-FAC, {ratio_text(b, 'EWC diag true')} for the "
            f"true diagonal and {ratio_text(b, 'EWC diag sq-mean-grad')} for the square of the "
            "mean gradient: where the ratio is far above 1 the penalty under-prices the "
            "damage to task 1."
        )
    report.section("Findings", "\n".join(lines))

    # --- verdict ------------------------------------------------------------------------------
    def compare(b, m1, m2):
        """+1 / -1 when m1's final accuracy is above / below m2's by more than the margin."""
        diff = mean(b, m1) - mean(b, m2)
        margin = 2 * max(spread(b, m1), spread(b, m2), 0.005)
        return int(np.sign(diff)) if abs(diff) > margin else 0

    words = {1: "above", 0: "within the margin of", -1: "below"}
    details, parts = [], []
    for b in benchmarks:
        ewc = "EWC diag true"
        vs_ft, vs_l2 = compare(b, ewc, "fine-tuning"), compare(b, ewc, "L2")
        parts += [vs_ft, vs_l2]
        details.append(
            f"{b}: EWC (diagonal true Fisher, Kirkpatrick's form) {mean(b, ewc):.3f} is "
            f"{words[vs_ft]} fine-tuning {mean(b, 'fine-tuning'):.3f} (forgetting "
            f"{mean(b, ewc, 'fgt'):.3f} vs {mean(b, 'fine-tuning', 'fgt'):.3f}) and "
            f"{words[vs_l2]} L2 {mean(b, 'L2'):.3f} (L2 accuracy just after learning each task "
            f"{mean(b, 'L2', 'new'):.3f} vs EWC {mean(b, ewc, 'new'):.3f}); structured: K-FAC "
            f"{mean(b, 'EWC K-FAC'):.3f}, full {mean(b, 'EWC full'):.3f}, recursive Laplace "
            f"{mean(b, 'recursive Laplace'):.3f}, online {mean(b, 'online EWC'):.3f}; joint "
            f"{mean(b, 'joint'):.3f}; wrong Fishers vs the true diagonal: empirical "
            f"{mean(b, 'EWC diag empirical') - mean(b, ewc):+.3f}, square of mean gradient "
            f"{mean(b, 'EWC diag sq-mean-grad') - mean(b, ewc):+.3f}"
        )

    def where(m1, m2):
        won = [b for b in benchmarks if compare(b, m1, m2) == 1]
        return " and ".join(won) if won else "neither benchmark"

    struct = ("EWC K-FAC", "EWC full", "recursive Laplace")
    both = [
        b
        for b in benchmarks
        if all(compare(b, m, o) == 1 for m in struct for o in ("fine-tuning", "L2"))
    ]
    details.insert(
        0,
        (
            f"In short: diagonal EWC beats fine-tuning on {where('EWC diag true', 'fine-tuning')} "
            f"and L2 on {where('EWC diag true', 'L2')}; all three structured penalties (K-FAC, "
            f"full, recursive Laplace) beat both on {' and '.join(both) if both else 'neither'}"
        ),
    )
    if QUICK:
        status = "inconclusive"
        details.insert(0, "QUICK mode (1 seed, tiny network, 2 strengths): not evidence")
    elif all(p == 1 for p in parts):
        status = "agrees"
    elif any(p == -1 for p in parts):
        status = "disagrees"
    else:
        status = "inconclusive"
    report.verdict(
        status,
        "; ".join(details) + ". Final average test accuracy, mean over "
        f"{len(CFG['eval_seeds'])} seeds; margin: 2 std over seeds (at least 0.01).",
    )
    report.text(f"Total run time {time.perf_counter() - start:.1f} s.")
    report.save()
    print(f"continual_learning: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
