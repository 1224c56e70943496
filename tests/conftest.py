"""Suite-wide fixtures: real services come from tests.support.fixtures."""

pytest_plugins = ["tests.support.fixtures"]
