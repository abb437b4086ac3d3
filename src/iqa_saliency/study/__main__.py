"""python -m iqa_saliency.study verify ...: see iqa_saliency.study.cli."""

from .cli import main

raise SystemExit(main())
