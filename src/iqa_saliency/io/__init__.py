"""The run folder on disk: atomic writes, names and columns, the writer, resume, provenance."""
