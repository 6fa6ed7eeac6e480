"""Tooling for minifim's own experiments and benchmarks (reports, ``make bench``).

Not part of the library's import graph: ``import minifim`` never imports this package.
"""
