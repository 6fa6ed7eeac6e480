"""The Fisher-information geometry of a model: curvature kinds (true, empirical, Monte-Carlo,
argmax Fisher; GGN; Hessian), their dense, diagonal, block and Kronecker-factored structures,
matrix-free operators and exact spectra.

Layer 2 of minifim: built on :mod:`minifim.core`.
"""
