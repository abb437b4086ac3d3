"""iqa-saliency: compare where a classifier looks with where a quality model sees damage."""

__version__ = "0.1.0"
