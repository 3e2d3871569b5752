"""Omniglot: source.py (files -> cached array), dataset.py (splits, sampler, the Dataset), lake_runs.py."""
