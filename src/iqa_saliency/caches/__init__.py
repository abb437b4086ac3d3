"""Caches shared between cells and sweeps: the clean pass and corrupted images."""
