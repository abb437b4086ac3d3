"""The original study's published numbers and `iqa-study verify`, which compares a reproduction with them.

The study: github.com/dks2000dks/Saliency-Maps-NR-IQA-Classification-Models, commit f028918
(docs/reproducing-the-study.md).
"""
