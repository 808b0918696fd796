"""Hydra entry points: thin wrappers over the mcmargin library."""
