"""Hydra configs (evaluate.yaml, train.yaml and their groups), installed with the package as iqa_saliency.conf."""
