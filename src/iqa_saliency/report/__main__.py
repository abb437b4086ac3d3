"""python -m iqa_saliency.report SWEEP_DIR: build (or rebuild) a sweep's report."""

from .sweep import main

raise SystemExit(main())
