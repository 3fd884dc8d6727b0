"""Processes that run inside the environment of the package they measure (see bench/__init__.py)."""
