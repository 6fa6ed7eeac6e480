"""K-FAC expand vs reduce vs the exact Fisher for weight-shared layers (Eschenhagen et al. 2023).

Claim tested (Eschenhagen, Immer, Turner, Schneider & Hennig, "Kronecker-Factored Approximate
Curvature for Modern Neural Network Architectures", NeurIPS 2023, Sec. 3): linear layers with
weight sharing appear in two settings, *expand* (the loss has a term per shared position, e.g. a
label per token) and *reduce* (the positions are aggregated, e.g. pooled, before the loss). The
two K-FAC flavours, K-FAC-expand (positions treated as extra samples: ``A = 1/(N R) sum_{n,r}
a a^T``, ``G = 1/N sum_{n,r} b b^T``) and K-FAC-reduce (``A`` from the position-averaged input,
``G`` from the position-summed gradient), are each EXACT for deep linear networks in their own
setting (the output Hessian constant, i.e. a Gaussian likelihood), and in general differ.

Criterion, fixed before the run. A layer's K-FAC block is compared with the exact Fisher's
diagonal block of the same layer, folded bias (``[W | b]``, Martens & Grosse's convention, where
the exactness statements hold with the bias), true Fisher (``type-2``):
``err = |K_l - F_ll|_F / |F_ll|_F``. Over ``SEEDS`` random parameter/data draws:

- (exact) in the three linear-Gaussian cases built for the claim (a deep linear sequence model in
  the expand setting; a linear dense-then-mean-pool model in the reduce setting; a strided,
  padded linear convolution with global average pooling, the reduce setting of a CNN), the
  matching flavour's error is at roundoff, ``max err <= 1e-10`` on every seed and layer;
- (distinct) in the same cases the other flavour is not exact: the lower end of the 95%
  t-interval (:func:`minifim.tools.report.t_interval`) of its mean error on the weight-shared
  layer exceeds ``1e-2``.

Both must hold for "agrees". Reported as well, with no claim from the paper to test (the paper
finds little difference between the flavours in training): the errors and the angle between the
damped NGD directions ``(K + lambda I)^{-1} g`` and ``(F + lambda I)^{-1} g`` (``lambda = 1e-3 tr
F / P``) on three non-linear categorical networks: the small CNN (flatten head, where neither
setting applies), the expand-setting sequence model and the reduce-setting one (the fixture
presets ``cnn-digits``, ``sequence-expand``, ``sequence-reduce``). The verdict rule is
:func:`criterion` (tested in tests/test_experiment_kfac_weight_sharing.py).

Run: ``MPLBACKEND=Agg python experiments/kfac_weight_sharing.py`` (``QUICK=1``: 5 seeds instead
of 20). Measured on 2 cores (1 BLAS thread), load average about 1: full 3.1 s wall (2.7 s in the
report), QUICK 2.6 s wall (0.6 s in the report; the rest is imports).
"""

import numpy as np
from threadpoolctl import threadpool_limits

import minifim
from minifim.tools.report import Report, angle_degrees, paired_t_interval, quick, t_interval

SEED = 0
QUICK = quick()
# BLAS threads for main(): tiny dense products and solves (P <= 150), where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report).
BLAS_THREADS = 1
SEEDS = 5 if QUICK else 20
N = 8
EXACT_TOL = 1e-10  # roundoff of a float64 Kronecker product of sums of a few hundred terms
DISTINCT = 1e-2  # the mismatched flavour's mean error must exceed this (t-interval low end)
FLAVOURS = ("expand", "reduce")
Conv2d, Identity, Linear, Mean = (
    minifim.layers.Conv2d,
    minifim.layers.Identity,
    minifim.layers.Linear,
    minifim.layers.Mean,
)


def _linear_cases():
    """``name -> (net, setting, shared layer index)``: the cases of the exactness claim."""
    return {
        "deep linear, expand setting": (
            minifim.Sequential(
                [Linear(3, 5), Identity(), Linear(5, 4), Identity(), Linear(4, 2)],
                likelihood="gaussian",
                input_shape=(4, 3),
                sigma=0.5,
            ),
            "expand",
            0,
        ),
        "deep linear, reduce setting": (
            minifim.Sequential(
                [Linear(3, 5), Identity(), Linear(5, 4), Mean(1), Linear(4, 2)],
                likelihood="gaussian",
                input_shape=(4, 3),
                sigma=0.5,
            ),
            "reduce",
            0,
        ),
        "linear conv + global average pool (reduce)": (
            minifim.Sequential(
                [Conv2d(1, 3, 3, stride=2, padding=1), Mean(3), Mean(2), Linear(3, 2)],
                likelihood="gaussian",
                input_shape=(1, 6, 6),
                sigma=0.5,
            ),
            "reduce",
            0,
        ),
    }


def _nonlinear_cases():
    """The fixture presets' networks (non-linear, categorical)."""
    out = {}
    for name in ("cnn-digits", "sequence-expand", "sequence-reduce"):
        spec = minifim.fixtures.PRESETS[name]
        out[name] = minifim.Sequential(
            spec["layers"], likelihood=spec["likelihood"], input_shape=spec["input_shape"]
        )
    return out


def layer_errors(net, theta, X, F):
    """``{flavour: [err_l]}``: per-layer relative Frobenius error of K-FAC (folded bias, true
    Fisher) against the exact Fisher's layer block ``F_ll``."""
    out = {}
    for approx in FLAVOURS:
        K = minifim.kfac(net, theta, X, None, "true", bias="folded", kfac_approx=approx).to_dense()
        errs = []
        for sl in net.layer_param_slices():
            ref = F[sl, sl]
            errs.append(float(np.linalg.norm(K[sl, sl] - ref) / np.linalg.norm(ref)))
        out[approx] = errs
    return out


def ngd_angles(net, theta, X, y, F):
    """``{flavour: angle}`` between ``(K + lambda I)^{-1} g`` and ``(F + lambda I)^{-1} g``, and
    under ``"block-diagonal"`` the angle of the exact layer-block-diagonal Fisher's direction
    (what K-FAC would give if its Kronecker factorisation were exact)."""
    g = minifim.gradient(net, theta, X, y)
    P = net.num_params
    lam = 1e-3 * np.trace(F) / P
    d_exact = np.linalg.solve(F + lam * np.eye(P), g)
    blocks = np.zeros_like(F)
    for sl in net.layer_param_slices():
        blocks[sl, sl] = F[sl, sl]
    out = {"block-diagonal": angle_degrees(np.linalg.solve(blocks + lam * np.eye(P), g), d_exact)}
    for approx in FLAVOURS:
        K = minifim.kfac(net, theta, X, None, "true", bias="folded", kfac_approx=approx).to_dense()
        out[approx] = angle_degrees(np.linalg.solve(K + lam * np.eye(P), g), d_exact)
    return out


def run_case(net, rng, n_seeds, with_angles):
    """Per seed: fresh parameters and inputs (labels drawn from the model)."""
    rows = []
    for _ in range(n_seeds):
        theta = net.init(rng)
        X = rng.standard_normal((N, *net.input_shape))
        F = minifim.true_fisher(net, theta, X)
        row = {"errors": layer_errors(net, theta, X, F)}
        if with_angles:
            y = net.sample_targets(net.forward(theta, X), rng)
            row["angles"] = ngd_angles(net, theta, X, y, F)
        rows.append(row)
    return rows


def criterion(linear):
    """The verdict of the exactness claim from the linear cases' per-seed errors.

    ``linear``: ``name -> (setting, shared layer, {flavour: (seeds, layers) array of errors})``.
    Returns ``(status, checks, details)``; ``status`` is ``"agrees"`` when, in every case, the
    matching flavour's largest error is ``<= EXACT_TOL`` and the other flavour's mean error on the
    shared layer has a 95% t-interval above ``DISTINCT``; else ``"disagrees"``.
    """
    checks, details = {}, {}
    for name, (setting, layer, errs) in linear.items():
        other = "reduce" if setting == "expand" else "expand"
        worst = float(np.max(errs[setting]))
        mean, low, high = t_interval(np.asarray(errs[other])[:, layer])
        checks[f"{name}: K-FAC-{setting} exact (max err {worst:.1e} <= {EXACT_TOL:g})"] = (
            worst <= EXACT_TOL
        )
        checks[
            f"{name}: K-FAC-{other} not exact (mean err {mean:.3g}, 95% CI [{low:.3g}, "
            f"{high:.3g}], low end > {DISTINCT:g})"
        ] = low > DISTINCT
        details[name] = (setting, worst, other, mean, low, high)
    status = "agrees" if all(checks.values()) else "disagrees"
    return status, checks, details


def main():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(SEED)
    report = Report(
        "kfac_weight_sharing",
        "K-FAC expand vs reduce vs the exact Fisher (Eschenhagen et al. 2023)",
        claim=(
            "K-FAC-expand and K-FAC-reduce are exact for deep linear networks with weight "
            "sharing in their respective setting (expand: a loss term per shared position; "
            "reduce: positions aggregated before the loss) and differ otherwise (Eschenhagen, "
            "Immer, Turner, Schneider & Hennig 2023, 'Kronecker-Factored Approximate Curvature "
            "for Modern Neural Network Architectures', NeurIPS)."
        ),
        seed=SEED,
    )
    linear = {}
    for name, (net, setting, layer) in _linear_cases().items():
        rows = run_case(net, rng, SEEDS, with_angles=False)
        errs = {a: np.array([r["errors"][a] for r in rows]) for a in FLAVOURS}
        linear[name] = (setting, layer, errs)
    nonlinear = {}
    for name, net in _nonlinear_cases().items():
        nonlinear[name] = (net, run_case(net, rng, SEEDS, with_angles=True))

    status, checks, details = criterion(linear)
    report.section(
        "Exactness cases (linear layers, Gaussian likelihood, sigma = 0.5)",
        f"{SEEDS} seeds, N = {N}; per-layer relative error of K-FAC (folded bias, true "
        "Fisher) against the exact Fisher's layer block; the weight-shared layer is layer 0.",
    )
    rows = []
    for name, (setting, layer, errs) in linear.items():
        for approx in FLAVOURS:
            e = errs[approx][:, layer]
            rows.append(
                [name, setting, approx, float(e.max()), *t_interval(e), float(errs[approx].max())]
            )
    report.table(
        [
            "case",
            "setting",
            "flavour",
            "max err (shared layer)",
            "mean err",
            "95% low",
            "95% high",
            "max err (all layers)",
        ],
        rows,
        floatfmt=".3g",
    )
    report.section(
        "Non-linear categorical networks (the fixture presets)",
        "Relative error on each layer and the angle between the damped K-FAC and exact NGD "
        "directions (lambda = 1e-3 tr F / P), mean and 95% t-interval over seeds; for "
        "reference, the angle of the exact Fisher's layer-block-diagonal direction, which "
        "K-FAC would reach if its Kronecker factorisation of each block were exact. No claim "
        "of the paper is tested here.",
    )
    rows = []
    for name, (_, runs) in nonlinear.items():
        for approx in FLAVOURS + ("block-diagonal",):
            ang = np.array([r["angles"][approx] for r in runs])
            if approx == "block-diagonal":
                rows.append([name, "exact layer blocks (reference)", "0", *t_interval(ang)])
                continue
            errs = np.array([r["errors"][approx] for r in runs])
            per_layer = ", ".join(
                f"{m:.3g}" for m in (t_interval(errs[:, l])[0] for l in range(errs.shape[1]))
            )
            rows.append([name, approx, per_layer, *t_interval(ang)])
    report.table(
        ["network", "flavour", "mean err per layer", "angle (deg)", "95% low", "95% high"],
        rows,
        floatfmt=".3g",
    )

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    names = list(linear) + list(nonlinear)
    width = 0.38
    for k, approx in enumerate(FLAVOURS):
        vals = [np.mean(linear[n][2][approx][:, 0]) for n in linear] + [
            np.mean([r["errors"][approx][0] for r in nonlinear[n][1]]) for n in nonlinear
        ]
        axes[0].bar(
            np.arange(len(names)) + (k - 0.5) * width,
            np.maximum(vals, 1e-17),
            width,
            label=f"K-FAC-{approx}",
        )
    axes[0].set_yscale("log")
    axes[0].set_xticks(np.arange(len(names)))
    axes[0].set_xticklabels(names, rotation=25, ha="right", fontsize=7)
    axes[0].set_ylabel("mean |K_0 - F_00| / |F_00| (layer 0)")
    axes[0].legend(fontsize=8)
    for k, approx in enumerate(FLAVOURS):
        vals = [np.mean([r["angles"][approx] for r in nonlinear[n][1]]) for n in nonlinear]
        axes[1].bar(
            np.arange(len(nonlinear)) + (k - 0.5) * width, vals, width, label=f"K-FAC-{approx}"
        )
    axes[1].set_xticks(np.arange(len(nonlinear)))
    axes[1].set_xticklabels(list(nonlinear), fontsize=8)
    axes[1].set_ylabel("angle to the exact NGD direction (deg)")
    axes[1].legend(fontsize=8)
    report.figure(
        fig,
        "kfac_flavours.png",
        "Left: K-FAC's error on the weight-shared layer (log scale; roundoff where the flavour "
        "matches the setting of a linear network). Right: the NGD direction angle on the "
        "non-linear networks.",
    )
    observed = []
    for name, (_, runs) in nonlinear.items():
        e = {a: np.array([r["errors"][a][0] for r in runs]) for a in FLAVOURS}
        mean, low, high = paired_t_interval(e["expand"], e["reduce"])
        smaller = "K-FAC-reduce" if low > 0 else "K-FAC-expand" if high < 0 else "neither"
        observed.append(
            f"- {name}, layer 0: err(expand) - err(reduce) = {mean:+.3g} (95% CI [{low:+.3g}, "
            f"{high:+.3g}]): smaller error {smaller}"
        )
    report.section(
        "Reading",
        "The criterion (fixed before the run):\n\n"
        + "\n".join(f"- {name}: {'yes' if ok else 'no'}" for name, ok in checks.items())
        + "\n\nObserved on the non-linear networks (no claim of the paper; paired over seeds; "
        "neither flavour is exact there, and the CNN's flatten head is neither setting, where "
        "K-FAC-expand is Grosse & Martens' KFC):\n\n" + "\n".join(observed),
    )
    report.verdict(
        status,
        "; ".join(
            f"{name}: K-FAC-{s} max err {w:.1e}, K-FAC-{o} mean err {m:.3g} [{lo:.3g}, {hi:.3g}]"
            for name, (s, w, o, m, lo, hi) in details.items()
        ),
    )
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
