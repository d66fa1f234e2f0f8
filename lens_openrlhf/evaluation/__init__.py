"""Evaluation: unbiased pass@k of checkpoints on a test set (``python -m lens_openrlhf.evaluation``).

``passk``: the estimator and the report (no vLLM); ``sampling``: vLLM sampling, scoring and the CLI.
"""
