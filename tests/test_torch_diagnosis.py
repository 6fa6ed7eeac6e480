"""Torch-made candidates for the diagnosis, written as public EWC, Laplace and K-FAC code writes
them (``make crosscheck``; skipped without torch).

Each candidate is computed by PyTorch alone from the fixture's model, inputs and labels (no
minifim route), and ``diagnose`` must name the convention it was written in: the structured
explanation is asserted exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from minifim.fixtures import make_fixture  # noqa: E402

from minifim.oracle import diagnose  # noqa: E402
from minifim.oracle.torch import to_torch  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    fx = make_fixture("categorical-tanh")
    model = to_torch(fx.net, fx.theta).double()
    X = torch.as_tensor(np.asarray(fx.X))
    y = torch.as_tensor(np.asarray(fx.y)).long()
    return fx, model, X, y


def flat_grad(model, loss):
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


def per_sample_grads(model, X, y, reduction):
    """Per-sample gradients of the loss with ``reduction`` over the batch, by torch.func."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    n = X.shape[0]

    def loss(p, x, t):
        out = functional_call(model, p, (x[None],))
        value = torch.nn.functional.cross_entropy(out, t[None], reduction="sum")
        return value / n if reduction == "mean" else value

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, X, y)
    return torch.cat([g[k].reshape(n, -1) for k in params], dim=1)


def explained(d):
    e = d.explanation
    return e["variant"], e["factors"], e["sign"], e["batch_size"], e["layout"]


def test_ewc_data_loader_square_of_mean_gradient(setup):
    """EWC with a DataLoader: the square of each mini-batch's mean-loss gradient, averaged
    over the batches (batch size B, the last batch ragged)."""
    fx, model, X, y = setup
    B = 3
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=B, shuffle=False
    )
    F = 0.0
    for xb, yb in loader:
        g = flat_grad(model, torch.nn.functional.cross_entropy(model(xb), yb))
        F = F + torch.outer(g, g)
    F = (F / len(loader)).numpy()
    d = diagnose(fx, F)
    assert explained(d) == ("square-of-mean-gradient", {}, 1, B, "pytorch")


def test_bessel_empirical_fisher_and_mean_loss_scores(setup):
    """An empirical Fisher divided by N - 1, and per-sample gradients of the mean loss."""
    fx, model, X, y = setup
    N = X.shape[0]
    G = per_sample_grads(model, X, y, "sum")  # gradients of -log p: minus the scores
    EF = (G.T @ G / (N - 1)).numpy()
    d = diagnose(fx, EF, key="empirical_fisher")
    assert explained(d) == ("empirical", {"N": 1, "N-1": -1}, 1, None, "pytorch")
    S = per_sample_grads(model, X, y, "mean").numpy()
    d = diagnose(fx, S, key="scores")
    assert explained(d) == ("scores", {"N": -1}, -1, None, "pytorch")


def test_summed_true_fisher_from_softmax(setup):
    """The true Fisher written as laplace-torch's 'full' GGN with a summed loss:
    ``sum_n J_n^T (diag p - p p^T) J_n`` by torch.func Jacobians."""
    fx, model, X, y = setup
    from torch.func import functional_call, jacrev

    params = {k: v.detach() for k, v in model.named_parameters()}
    J = jacrev(lambda p: functional_call(model, p, (X,)))(params)
    N, C = X.shape[0], model(X).shape[1]
    J = torch.cat([J[k].reshape(N, C, -1) for k in params], dim=2)
    p = torch.softmax(model(X), dim=1).detach()
    Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    F = torch.einsum("ncp,ncd,ndq->pq", J, Lam, J).numpy()
    d = diagnose(fx, F)
    main = explained(d)
    assert main[1:] == ({"N": 1}, 1, None, "pytorch") and main[0] in ("true", "ggn")
