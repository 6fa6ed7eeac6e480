"""minifim: exact Fisher-information geometry for small neural networks (float64, NumPy).

The public API is re-exported here and listed in ``__all__``; the conventions are stated once in
the documentation's ``docs/conventions.md`` (``make docs``): flat parameter order
``W0, b0, W1, b1, ...`` with ``W: (out, in)``; curvature matrices are means over samples.
Namespaces kept as modules: :mod:`minifim.data`, :mod:`minifim.optim`,
:mod:`minifim.fixtures`, :mod:`minifim.oracle`, :mod:`minifim.plotting`. No public name
shadows a submodule: ``minifim.kfac`` is the function, its module is ``minifim.geometry.kronecker``;
``minifim.sensitivity`` is the function, its module is ``minifim.methods.sensitivities``.
"""

import sys as _sys
import types as _types


from ._version import __version__

# model: activations, likelihoods, the network
from .core.activations import ACTIVATIONS, Activation, get_activation
from .core.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    Likelihood,
    Poisson,
    get_likelihood,
)
from .core.model import MLP, Sequential

# layers of a Sequential network (the namespace minifim.layers: Linear, Conv2d, Flatten, Mean, ...)
from . import layers

# per-sample scores and output Jacobians
from .core.scores import (
    jacobian_vector_product,
    output_jacobians,
    per_sample_scores,
    vector_jacobian_product,
)

# training objective
from .core.objective import accuracy, gradient, loss, loss_and_gradient

# option vocabularies: string enums in the namespace minifim.options (FisherKind, Structure, ...;
# the plain strings are accepted everywhere)
from . import options

# memory budget
from .memory import (
    MemoryBudgetError,
    format_bytes,
    memory_budget,
    memory_limit,
    set_memory_budget,
)

# exact curvature: true, empirical and Monte-Carlo Fisher, GGN, Hessian; diagonal and blocks
from .geometry.curvature import (
    FISHER_KINDS,
    block_diagonal,
    curvature_factors,
    curvature_is_psd,
    curvature_matrix,
    empirical_fisher,
    fisher_diagonal,
    ggn,
    hessian,
    mc_fisher,
    square_of_mean_gradient,
    true_fisher,
)

# Kronecker-factored curvature (K-FAC)
from .geometry.kronecker import KFACFactors, kfac

# curvature structures (dense, diagonal, block-diagonal, K-FAC) and their factory
from .geometry.structures import KFAC, BlockDiagonal, Dense, Diagonal, curvature

# matrix-free curvature-vector products
from .geometry.operators import fisher_operator, ggn_operator, hessian_operator

# spectrum and spectral statistics
from .geometry.spectrum import (
    CURVATURES,
    KarakidaStatistics,
    SpectrumInfo,
    abbas_effective_dimension,
    curvature_spectrum,
    curvature_statistics,
    damped_condition_number,
    damped_logdet,
    default_rank_tolerance,
    effective_dimension,
    fisher_rao_norm,
    fisher_spectrum,
    karakida_statistics,
    numerical_rank,
    spectral_frobenius_norm,
    spectral_trace,
    spectrum_statistics,
)

# oracle: reference fixtures and checks against them
from . import oracle
from .oracle import fixtures
from .oracle.fixtures import Fixture, FixtureError, load_fixture, make_fixture, save_fixture
from .oracle import assert_matches, check, diagnose

# natural gradient and optimisers
from .methods import optim
from .methods.ngd import natural_gradient
from .methods.optim import GaussianPrior, fit_map, train

# continual learning: elastic weight consolidation
from .methods.ewc import EWC, EWCTask, Quadratic, ewc_lambda, ewc_strength, task_curvature

# Laplace approximation
from .methods.laplace import Laplace

# sensitivity, pruning and merging
from .methods.merging import fisher_merge
from .methods.pruning import PruningResult, prune, prune_path
from .methods.sensitivities import sensitivity

__all__ = [
    "__version__",
    # namespaces
    "data",
    "fixtures",
    "layers",
    "optim",
    "options",
    "oracle",
    "plotting",
    # model
    "ACTIVATIONS",
    "Activation",
    "get_activation",
    "Likelihood",
    "Categorical",
    "Bernoulli",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Poisson",
    "get_likelihood",
    "MLP",
    "Sequential",
    # exact curvature
    "FISHER_KINDS",
    "true_fisher",
    "empirical_fisher",
    "mc_fisher",
    "ggn",
    "hessian",
    "curvature_matrix",
    "curvature_factors",
    "curvature_is_psd",
    "fisher_diagonal",
    "block_diagonal",
    "square_of_mean_gradient",
    # Kronecker factors
    "KFACFactors",
    "kfac",
    "curvature",
    "Dense",
    "Diagonal",
    "BlockDiagonal",
    "KFAC",
    # memory budget
    "MemoryBudgetError",
    "format_bytes",
    "memory_budget",
    "memory_limit",
    "set_memory_budget",
    # training objective
    "loss",
    "gradient",
    "loss_and_gradient",
    "accuracy",
    # matrix-free products
    "fisher_operator",
    "ggn_operator",
    "hessian_operator",
    # scores and Jacobians
    "per_sample_scores",
    "output_jacobians",
    "jacobian_vector_product",
    "vector_jacobian_product",
    # spectrum
    "CURVATURES",
    "SpectrumInfo",
    "KarakidaStatistics",
    "curvature_spectrum",
    "fisher_spectrum",
    "curvature_statistics",
    "spectrum_statistics",
    "karakida_statistics",
    "spectral_trace",
    "spectral_frobenius_norm",
    "numerical_rank",
    "default_rank_tolerance",
    "effective_dimension",
    "abbas_effective_dimension",
    "damped_condition_number",
    "damped_logdet",
    "fisher_rao_norm",
    # oracle
    "Fixture",
    "FixtureError",
    "make_fixture",
    "save_fixture",
    "load_fixture",
    "check",
    "assert_matches",
    "diagnose",
    # natural gradient and optimisers
    "natural_gradient",
    "train",
    "fit_map",
    "GaussianPrior",
    # continual learning
    "EWC",
    "EWCTask",
    "Quadratic",
    "task_curvature",
    "ewc_lambda",
    "ewc_strength",
    # Laplace
    "Laplace",
    # sensitivity, pruning, merging
    "sensitivity",
    "prune",
    "prune_path",
    "PruningResult",
    "fisher_merge",
]


# ``minifim.optim`` and ``minifim.fixtures`` are public namespaces that live in subpackages:
# registered under their short names so that ``from minifim.optim import sgd`` keeps working.
_sys.modules.setdefault(__name__ + ".optim", optim)
_sys.modules.setdefault(__name__ + ".fixtures", fixtures)

_LAZY_MODULES = ("data", "plotting")  # user-facing helpers, imported on first use


def __getattr__(name: str) -> _types.ModuleType:
    """Import the helper modules :mod:`minifim.data` and :mod:`minifim.plotting` on first use."""
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
