"""Random-weight models in the real folder layouts: fixtures for `make-test-models`, the tests and
the benchmarks only. Nothing the backend runs for a user imports this package
(tests/test_declared_imports.py checks it)."""
