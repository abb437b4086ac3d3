"""Models: the PaQ-2-PiQ quality model and torchvision classifiers, with their weights."""
