"""``python -m lens_openrlhf.train_ppo_ray``: the pinned OpenRLHF's train_ppo_ray with the LENS estimators.

Every OpenRLHF flag works as in ``python -m openrlhf.cli.train_ppo_ray``; added: the registry's
estimators as ``--algo.advantage.estimator`` choices, ``--algo.lens.*`` options, the flat flags of
OpenRLHF <= 0.10, and ``--lens.cpu_mode``. See ``--help`` and README.md.
"""

from lens_openrlhf.coupling import main

if __name__ == "__main__":
    main()
