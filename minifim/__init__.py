"""minifim: exact Fisher-information geometry for small neural networks (float64, NumPy).

The public API is re-exported here; see README.md for the conventions (flat parameter order
``W0, b0, W1, b1, ...`` with ``W: (out, in)``; curvature matrices are means over samples).
"""

from . import data
from ._version import __version__

# foundation
from .activations import ACTIVATIONS, Activation, get_activation

# curvature
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
from .kronecker import KFACFactors, kfac
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, get_likelihood
from .memory import (
    MemoryBudgetError,
    format_bytes,
    memory_budget,
    memory_limit,
    set_memory_budget,
)
from .model import MLP
from .objective import accuracy, gradient, loss, loss_and_gradient
from .operators import fisher_operator, ggn_operator, hessian_operator
from .scores import (
    jacobian_vector_product,
    output_jacobians,
    per_sample_scores,
    vector_jacobian_product,
)

# spectrum (issue 4)
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

# oracle (issue 5)
from . import fixtures, oracle
from .fixtures import Fixture, FixtureError, load_fixture, make_fixture, save_fixture
from .oracle import assert_matches, check, diagnose

# ngd and optimisers (issue 7)
from . import optim
from .ngd import natural_gradient
from .optim import GaussianPrior, fit_map, train

# ewc (issue 8)
from .ewc import EWC, EWCTask, Quadratic, ewc_lambda, ewc_strength, task_curvature

# laplace and cramer-rao (issue 9)
from .laplace import Laplace

# sensitivity, pruning, merging (issue 9)
from .merging import fisher_merge
from .pruning import PruningResult, prune, prune_path
from .sensitivities import sensitivity
