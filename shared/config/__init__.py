"""What the operator declares: app settings, the operator file (rotation.json), the consumer catalog."""
