"""Benchmarks against the floor (`make bench`); not part of the tests."""
