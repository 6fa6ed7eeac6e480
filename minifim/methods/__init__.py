"""Uses of the Fisher: natural gradient and optimisers, EWC, the Laplace approximation, pruning,
merging and weight sensitivity.

Layer 3 of minifim: built on :mod:`minifim.geometry`.
"""
