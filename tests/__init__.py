"""minifim test suite (a package: shared cases in tests.cases, bounds in tests.tolerances)."""
