"""Evaluation: unbiased pass@k of checkpoints on a test set (``python -m lens_openrlhf.evaluation``).

``sampling``: the one sampler API, :func:`~lens_openrlhf.evaluation.sampling.sample_and_score`, with a vLLM
(default) or Hugging Face (``hf``) backend, and the CLI; ``scoring``: Math-Verify or reasoning-gym verdicts and the
boxed count; ``passk``: the estimator, the reports and the demo's per-level table (no vLLM, no torch).
"""
