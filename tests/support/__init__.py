"""Test support: real, throw-away backing services and their pytest fixtures."""
