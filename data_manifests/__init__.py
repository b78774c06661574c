"""Versioned descriptions of the archives medst knows (YAML, read with importlib.resources)."""
