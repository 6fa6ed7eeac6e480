"""minifim: exact Fisher-information geometry for small neural networks (float64, NumPy)."""
from ._version import __version__
from .activations import ACTIVATIONS, Activation, get_activation
from .curvature import (FISHER_KINDS, block_diagonal, curvature_matrix, empirical_fisher,
                        fisher_diagonal, ggn, hessian, mc_fisher, square_of_mean_gradient,
                        true_fisher)
from .likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, get_likelihood
from .memory import MemoryBudgetError, memory_budget, memory_limit, set_memory_budget
from .model import MLP
from .scores import (jacobian_vector_product, output_jacobians, per_sample_scores,
                     vector_jacobian_product)
from .kfac import KFACFactors, kfac
from .operators import fisher_operator, ggn_operator, hessian_operator
