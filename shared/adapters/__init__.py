"""Everything that talks to the world: Key Vault, blob leases, notifiers, credentials, telemetry."""
