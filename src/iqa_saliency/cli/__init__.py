"""Command-line entry points: compose the Hydra config, then call the library."""
