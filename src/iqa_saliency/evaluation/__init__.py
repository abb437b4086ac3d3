"""Evaluating one cell: the Lightning module, similarity of maps, metrics, the sanity check."""
