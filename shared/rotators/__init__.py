"""Rotators by kind; the composition root builds the registry."""
