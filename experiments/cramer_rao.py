"""The Cramer-Rao bound: the maximum-likelihood estimate's covariance against (N F)^-1.

Claim (Cramer 1946, Rao 1945; asymptotic efficiency of the MLE): for a well-specified regular
model, the covariance of the maximum-likelihood estimate over resampled data sets tends to the
inverse Fisher information ``(N F)^{-1}``; for an over-parameterised network this holds in the
identifiable directions (the range of ``F``) and in function space.

Setup (seed 0). Fixed design: for every ``N`` the inputs ``X ~ N(0, I)`` are drawn once
(``minifim.data.teacher_data``) and ``R`` data sets resample only the labels from the teacher,
so the bound is exactly ``(N F_X)^{-1}`` with ``F_X = minifim.true_fisher(net, theta0, X)``, the
mean Fisher on that design (no Monte-Carlo error in the bound). Each MLE is fitted by full-batch
L-BFGS (``minifim.fit_map`` with ``prior_precision=0``) from the true ``theta0``.

1. Logistic regression (``MLP([3, 1], identity, bernoulli)``): identifiable, ``F`` full rank.
2. A ReLU teacher ``MLP([2, 3, 1], relu, gaussian, sigma=0.3)``: the three rescalings
   ``(w_j, b_j, v_j) -> (c w_j, c b_j, v_j / c)`` of the hidden units leave the function unchanged,
   so ``F`` has three zero eigenvalues whose eigenvectors are the rescalings' tangents; the MLE
   is not unique along them and no bound applies there. We compare (a) the whitened covariance
   ``diag(lambda)^{1/2} U^T Cov(theta_hat) U diag(lambda)^{1/2}`` in the eigenbasis ``U`` of
   ``N F`` restricted to eigenvalues ``lambda > 1e-8 lambda_max`` (which should tend to ``I``)
   and (b) the covariance of the fitted function at 20 test inputs against the delta-method
   bound ``J (N F)^+ J^T`` (pseudo-inverse on the same subspace), which is reparameterisation
   invariant and blind to the symmetry directions because ``J`` annihilates them.

Statistic: the mean eigenvalue of the whitened covariance, ``tr / r``, with standard error
``sqrt(2 / (r R))`` for Gaussian estimates; the spread of single eigenvalues is set by ``R``
(Marchenko-Pastur edges ``(1 +- sqrt(r / R))^2``).

Run: ``python experiments/cramer_rao.py`` (``QUICK=1`` for a short run).
"""

import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import minifim
from minifim.data import teacher_data
from minifim.tools.report import (
    Report,
    bootstrap_interval,
    interval_position,
    quick,
    verdict_from_positions,
)

SEED = 0
QUICK = quick()
# BLAS threads for main(): small dense solves and products dominate, where BLAS threads only add
# overhead and, on a loaded machine, spin (see minifim.tools.report). Measured: thousands of L-BFGS fits
# and (P, P) solves with P <= 13.
BLAS_THREADS = 1
LOGREG_NS = [100, 400, 1600] if QUICK else [50, 100, 200, 400, 800, 1600, 3200, 6400]
MLP_NS = [400, 1600] if QUICK else [200, 400, 800, 1600, 3200, 6400]
R_LOGREG = 150 if QUICK else 1000
R_MLP = 60 if QUICK else 400
RANK_TOL = 1e-8
# logistic teacher: W0 = (1, -0.5, 0.8), b0 = 0.3
THETA_LOGREG = np.array([1.0, -0.5, 0.8, 0.3])
# ReLU teacher: three hidden units with distinct directions whose kinks cross the input cloud,
# output weights O(1) against the noise sigma = 0.3 (W0 rows, b0, W1, b1 in flat order)
THETA_MLP = np.array([1.0, 0.0, -0.5, 0.9, -0.6, -0.8, 0.2, -0.1, 0.1, 1.2, -1.0, 0.9, 0.1])


TOL = 0.1  # criterion band: the whitened covariance's mean eigenvalue within 1 +- TOL


def cramer_rao_criterion(intervals, tol=TOL):
    """The verdict from ``{name: (estimate, lo, hi)}`` of quantities the bound predicts to
    be 1 at large N (mean whitened eigenvalue, function-space variance ratio): each 95%
    interval within ``1 +- tol``. Returns ``(verdict, positions)``."""
    pos = {k: interval_position(iv, 1 - tol, 1 + tol) for k, iv in intervals.items()}
    return verdict_from_positions(pos.values()), pos


def mle_replicates(net, theta0, X, R, rng, desc):
    """R maximum-likelihood fits on label resamples of the fixed design X: (R, P) and the
    median norm of the final mean-NLL gradient."""
    out, grads = [], []
    f0 = net.forward(theta0, X)
    for _ in tqdm(range(R), desc=desc, leave=False):
        y = net.likelihood.sample(f0, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            theta, info = minifim.fit_map(net, theta0, X, y, 0.0, gtol=1e-9, max_iter=2000)
        grads.append(info["grad_norm"])
        out.append(theta)
    return np.array(out), float(np.median(grads))


def whitened(E, theta0, M, tol=RANK_TOL):
    """Eigenvalues of the covariance of E in the whitened range of the precision M."""
    w, U = np.linalg.eigh(M)
    keep = w > tol * w.max()
    Z = (E - theta0) @ U[:, keep] * np.sqrt(w[keep])
    return np.linalg.eigvalsh(np.cov(Z.T).reshape(keep.sum(), keep.sum())), w, U, keep


def rescaling_tangents(net, theta):
    """The three tangents of the ReLU unit rescalings at theta (columns, normalised)."""
    (w0, b0), (w1, _) = net.layer_slices
    H, D = net.shapes[0]
    T = np.zeros((net.num_params, H))
    W0, B0, W1 = theta[w0].reshape(H, D), theta[b0], theta[w1]
    for j in range(H):
        t = np.zeros(net.num_params)
        t[w0.start + j * D : w0.start + (j + 1) * D] = W0[j]
        t[b0.start + j] = B0[j]
        t[w1.start + j] = -W1[j]
        T[:, j] = t / np.linalg.norm(t)
    return T


def logistic(report, rng):
    net = minifim.MLP([3, 1], activation="identity", likelihood="bernoulli")
    rows, eigs = [], []
    for N in LOGREG_NS:
        X, _ = teacher_data(net, THETA_LOGREG, N, rng)
        NF = N * minifim.true_fisher(net, THETA_LOGREG, X)
        E, gnorm = mle_replicates(net, THETA_LOGREG, X, R_LOGREG, rng, f"logistic N={N}")
        ok = np.all(np.isfinite(E), axis=1) & (np.abs(E).max(axis=1) < 1e3)  # no separation
        lam = whitened(E[ok], THETA_LOGREG, NF)[0]
        bias = np.linalg.norm(np.linalg.cholesky(NF).T @ (E[ok].mean(axis=0) - THETA_LOGREG))
        eigs.append(lam)
        rows.append(
            [
                N,
                int(ok.sum()),
                gnorm,
                float(lam.mean()),
                float(lam.min()),
                float(lam.max()),
                float(bias),
            ]
        )
    report.section(
        "Logistic regression",
        f"MLP {list(net.sizes)}, theta0 = "
        f"{THETA_LOGREG.tolist()}, {R_LOGREG} label resamples per N. Whitened: "
        "eigenvalues of (N F)^{1/2} Cov(theta_hat) (N F)^{1/2} (1 when the bound is "
        "attained); bias: |(N F)^{1/2} (mean theta_hat - theta0)| (in units of the "
        "bound's standard deviation; sampling error ~ sqrt(P / R)).",
    )
    report.table(
        [
            "N",
            "fits used",
            "median final gradient norm",
            "mean whitened eigenvalue",
            "min",
            "max",
            "whitened bias",
        ],
        rows,
    )
    return eigs


def mlp(report, rng):
    net = minifim.MLP([2, 3, 1], activation="relu", likelihood="gaussian", sigma=0.3)
    Xs = rng.standard_normal((20, 2))
    Js = minifim.output_jacobians(net, THETA_MLP, Xs)[:, 0, :]
    rows, eigs, fratios, spectra = [], [], [], None
    for N in MLP_NS:
        X, _ = teacher_data(net, THETA_MLP, N, rng)
        NF = N * minifim.true_fisher(net, THETA_MLP, X)
        E, gnorm = mle_replicates(net, THETA_MLP, X, R_MLP, rng, f"ReLU MLP N={N}")
        lam, w, U, keep = whitened(E, THETA_MLP, NF)
        Uk = U[:, keep]
        bound_f = Js @ Uk @ np.diag(1 / w[keep]) @ Uk.T @ Js.T
        fs = np.array([net.forward(e, Xs)[:, 0] for e in E])
        ratio = np.diag(np.cov(fs.T)) / np.diag(bound_f)
        # mean ratio over the test inputs, bootstrap over the replicates (for the verdict)
        bdiag = np.diag(bound_f)
        boot = bootstrap_interval(
            np.arange(len(fs), dtype=float),
            rng,
            statistic=lambda idx, fs=fs, b=bdiag: float(
                np.mean(np.var(fs[idx.astype(int)], axis=0, ddof=1) / b)
            ),
            n_resamples=500,
        )
        # the null eigenvectors are the rescaling tangents: largest principal angle
        T = rescaling_tangents(net, THETA_MLP)
        V = U[:, ~keep]  # sine of the largest angle: |(I - V V^T) T|_2 (no cos rounding)
        angle = math.degrees(math.asin(min(1.0, np.linalg.norm(T - V @ (V.T @ T), 2))))
        null_sd = np.sqrt(np.linalg.eigvalsh(np.cov(((E - THETA_MLP) @ U[:, ~keep]).T)))
        eigs.append(lam)
        fratios.append(ratio)
        spectra = w / N
        rows.append(
            [
                N,
                int((~keep).sum()),
                angle,
                gnorm,
                float(lam.mean()),
                float(lam.min()),
                float(lam.max()),
                float(np.median(ratio)),
                float(ratio.min()),
                float(ratio.max()),
                float(null_sd.max()),
            ]
        )
    report.section(
        "ReLU teacher network",
        f"MLP {list(net.sizes)} (P = {net.num_params}), "
        f"sigma = 0.3, theta0 = {THETA_MLP.tolist()}, {R_MLP} label resamples per "
        f"N, 20 test inputs for the function-space comparison. Null directions: "
        f"eigenvalues of N F below {RANK_TOL:g} of the largest; their angle to the "
        "span of the three rescaling tangents is the largest principal angle. "
        "Function-space ratio: Var f_hat(x*) / [J (N F)^+ J^T](x*, x*) over the "
        "test inputs. 'sd along null': the MLE's largest standard deviation in the "
        "null directions, where it is set by the optimiser (started at theta0), "
        "not by the data. The ReLU likelihood is only piecewise smooth in theta: "
        "the MLE sits where data points cross the units' kinks, and the gradient "
        "jumps there by O(1/N), so L-BFGS stops at gradient norms ~1e-3 (the "
        "resulting error, O(1/N), is small against the O(1/sqrt(N)) spread "
        "compared here).",
    )
    report.table(
        [
            "N",
            "null dims",
            "null angle (deg)",
            "median final gradient norm",
            "mean whitened eigenvalue",
            "min",
            "max",
            "function ratio median",
            "min",
            "max",
            "sd along null",
        ],
        rows,
    )
    return eigs, fratios, spectra, boot


def main():
    report = Report(
        "cramer_rao",
        "The Cramer-Rao bound for the maximum-likelihood estimate",
        "For a well-specified model the covariance of the maximum-likelihood "
        "estimate tends to (N F)^-1 as N grows (Cramer-Rao bound, attained "
        "asymptotically); for an over-parameterised network in the identifiable "
        "directions and in function space.",
        SEED,
    )
    report.paper_claim(
        "the covariance of an unbiased estimator is bounded below by the inverse Fisher "
        "information, and the maximum-likelihood estimate of a regular, correctly specified "
        "model attains the bound asymptotically: sqrt(N) (theta_hat - theta) -> N(0, F^-1)",
        "Rao 1945; Cramer 1946, Sec. 32.3 and 33.3",
    )
    report.criterion(
        "`cramer_rao_criterion`: at the largest N the 95% interval of the mean eigenvalue of "
        "the whitened MLE covariance (logistic regression; the ReLU MLP in its identifiable "
        "subspace) and of the mean function-space variance ratio over 20 test inputs "
        "(bootstrap over replicates) lies within "
        f"1 +- {TOL:g}. All inside: agrees; any outside: disagrees; else inconclusive."
    )
    rng = np.random.default_rng(SEED)
    eig_lr = logistic(report, rng)
    eig_mlp, fratios, spectrum, f_boot = mlp(report, rng)

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4), gridspec_kw={"wspace": 0.32})
    for ax, Ns, eigs, R, title in (
        (axes[0], LOGREG_NS, eig_lr, R_LOGREG, "Logistic regression (P = 4)"),
        (axes[1], MLP_NS, eig_mlp, R_MLP, "ReLU MLP, identifiable subspace"),
    ):
        r = len(eigs[0])
        for N, lam in zip(Ns, eigs):
            ax.scatter(np.full(r, N), lam, s=10, c="tab:blue", alpha=0.6)
        ax.plot(Ns, [lam.mean() for lam in eigs], "o-", c="tab:red", label="mean (tr / r)")
        se = math.sqrt(2 / (r * R))
        ax.fill_between(
            Ns, 1 - 2 * se, 1 + 2 * se, color="tab:red", alpha=0.15, label="1 +- 2 s.e. of the mean"
        )
        for edge in ((1 - math.sqrt(r / R)) ** 2, (1 + math.sqrt(r / R)) ** 2):
            ax.axhline(edge, ls=":", c="grey")
        ax.axhline(1.0, c="k", lw=1)
        ax.set(
            xscale="log",
            xlabel="N (samples)",
            title=title,
            ylabel="eigenvalues of whitened Cov(theta_hat)",
        )
        ax.set_xticks(Ns, [str(N) for N in Ns], minor=False)
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.legend(fontsize=7)
    axes[2].semilogy(np.arange(1, len(spectrum) + 1), np.clip(spectrum, 1e-18, None), "o")
    axes[2].axhline(RANK_TOL * spectrum.max(), ls="--", c="grey", label="rank threshold")
    axes[2].set(
        xlabel="index",
        ylabel="eigenvalue of the mean Fisher F",
        title=f"ReLU MLP: spectrum of F (N = {MLP_NS[-1]})",
    )
    axes[2].legend(fontsize=7)
    axes[3].boxplot(fratios, positions=range(len(MLP_NS)), widths=0.5)
    axes[3].set_xticks(range(len(MLP_NS)), [str(N) for N in MLP_NS])
    axes[3].axhline(1.0, c="k", lw=1)
    axes[3].set(
        xlabel="N (samples)",
        ylabel="Var f_hat(x*) / [J (N F)^+ J^T]",
        title="ReLU MLP, function space (20 test inputs)",
    )
    report.figure(
        fig,
        "cramer_rao.png",
        "Whitened MLE covariance against the Cramer-Rao "
        "bound (1 = attained; dotted: Marchenko-Pastur sampling edges for R "
        "replicates), the Fisher spectrum of the ReLU net with its three zero "
        "eigenvalues (rescaling symmetries), and the function-space variance ratio.",
    )

    def interval(eigs, R):
        lam = eigs[-1]
        se = math.sqrt(2 / (len(lam) * R))
        return float(lam.mean()), float(lam.mean() - 1.96 * se), float(lam.mean() + 1.96 * se)

    ivs = {
        f"logistic regression, N = {LOGREG_NS[-1]}: mean whitened eigenvalue": interval(
            eig_lr, R_LOGREG
        ),
        f"ReLU MLP, N = {MLP_NS[-1]}: mean whitened eigenvalue (identifiable subspace)": interval(
            eig_mlp, R_MLP
        ),
        f"ReLU MLP, N = {MLP_NS[-1]}: mean function-space variance ratio (20 inputs)": f_boot,
    }
    status, pos = cramer_rao_criterion(ivs)
    for name, iv in ivs.items():
        report.measure(
            name,
            *iv,
            interval="95% bootstrap over replicates"
            if "function" in name
            else "95% normal, s.e. sqrt(2 / (r R)) of Gaussian estimates",
            n=R_LOGREG if name.startswith("logistic") else R_MLP,
        )
    report.measure(
        f"logistic regression, N = {LOGREG_NS[0]}: mean whitened eigenvalue",
        *interval(eig_lr[:1], R_LOGREG),
        interval="95% normal, s.e. sqrt(2 / (r R)) (smallest N, for the trend)",
        n=R_LOGREG,
    )
    report.measure(
        f"ReLU MLP, N = {MLP_NS[0]}: mean whitened eigenvalue",
        *interval(eig_mlp[:1], R_MLP),
        interval="95% normal, s.e. sqrt(2 / (r R)) (smallest N, for the trend)",
        n=R_MLP,
    )
    detail = "; ".join(f"{k}: {iv[0]:.3f} [{iv[1]:.3f}, {iv[2]:.3f}]" for k, iv in ivs.items())
    off = [k for k, v in pos.items() if v != "inside"]
    if off:
        detail += ". Not inside 1 +- " + f"{TOL:g}: " + ", ".join(f"{k} ({pos[k]})" for k in off)
    report.verdict(status, detail)
    report.save()


if __name__ == "__main__":
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        main()
