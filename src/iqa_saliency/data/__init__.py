"""Images in: sources, decoding, corrupted pairs, splits, the quality gate and image selection."""
