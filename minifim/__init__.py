"""minifim: exact Fisher-information geometry for small neural networks (float64, NumPy).

The public API is re-exported here and listed in ``__all__``; see README.md for the conventions
(flat parameter order ``W0, b0, W1, b1, ...`` with ``W: (out, in)``; curvature matrices are means
over samples). Namespaces kept as modules: :mod:`minifim.data`, :mod:`minifim.optim`,
:mod:`minifim.fixtures`, :mod:`minifim.oracle`, :mod:`minifim.plotting`. No public name
shadows a submodule: ``minifim.kfac`` is the function, its module is ``minifim.kronecker``;
``minifim.sensitivity`` is the function, its module is ``minifim.sensitivities``.
"""

from . import data
from ._version import __version__

# model: activations, likelihoods, the network
from .activations import ACTIVATIONS, Activation, get_activation
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, get_likelihood
from .model import MLP

# per-sample scores and output Jacobians
from .scores import (
    jacobian_vector_product,
    output_jacobians,
    per_sample_scores,
    vector_jacobian_product,
)

# training objective
from .objective import accuracy, gradient, loss, loss_and_gradient

# memory budget
from .memory import (
    MemoryBudgetError,
    format_bytes,
    memory_budget,
    memory_limit,
    set_memory_budget,
)

# exact curvature: true, empirical and Monte-Carlo Fisher, GGN, Hessian; diagonal and blocks
from .curvature import (
    FISHER_KINDS,
    block_diagonal,
    curvature_factors,
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
from .kronecker import KFACFactors, kfac

# matrix-free curvature-vector products
from .operators import fisher_operator, ggn_operator, hessian_operator

# spectrum and spectral statistics
from . import plotting
from .spectrum import (
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
from . import fixtures, oracle
from .fixtures import Fixture, FixtureError, load_fixture, make_fixture, save_fixture
from .oracle import assert_matches, check, diagnose

# natural gradient and optimisers
from . import optim
from .ngd import natural_gradient
from .optim import GaussianPrior, fit_map, train

# continual learning: elastic weight consolidation
from .ewc import EWC, EWCTask, Quadratic, ewc_lambda, ewc_strength, task_curvature

# Laplace approximation
from .laplace import Laplace

# sensitivity, pruning and merging
from .merging import fisher_merge
from .pruning import PruningResult, prune, prune_path
from .sensitivities import sensitivity

__all__ = [
    "__version__",
    # namespaces
    "data",
    "fixtures",
    "optim",
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
    "get_likelihood",
    "MLP",
    # exact curvature
    "FISHER_KINDS",
    "true_fisher",
    "empirical_fisher",
    "mc_fisher",
    "ggn",
    "hessian",
    "curvature_matrix",
    "curvature_factors",
    "fisher_diagonal",
    "block_diagonal",
    "square_of_mean_gradient",
    # Kronecker factors
    "KFACFactors",
    "kfac",
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
