"""The demo: ``python -m lens_openrlhf.demo`` (``make demo``), LENS through OpenRLHF's real pipeline on one CPU machine.

Not part of the product's training path: everything here serves the demo, the CPU benchmarks and the tests.

=================== ===================================================================================
module              concern
=================== ===================================================================================
``cli``             the command: parse, prepare, measure, run the job, report (``main``)
``setups``          what runs: the default (answers), ``--format-lesson``, ``--all-negative``
``data``            the inputs: reasoning-gym files, reward files, the synthetic arithmetic set
``warmstart``       the supervised warm start of the tiny model (transformers' ``Trainer``), cached
``tiny``            the tiny Qwen2 and its tokenizer, built locally in seconds
``heldout``         held-out pass@k of any checkpoint (HF sampling, the gym scorer), with the boxed share
``job``             the training command, running it for a person (console, signals), ``--submit``
``ray_head``        a private Ray head for ``ray job submit`` runs
``report``          ``metrics.json``, the before/after table, the plot
``smollm2``         SmolLM2-135M-Instruct from a PyPI wheel (opt-in, not in CI)
=================== ===================================================================================
"""
