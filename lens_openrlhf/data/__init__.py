"""The datasets as OpenRLHF prompt files: ``python -m lens_openrlhf.data {train,test,all,gym} ...``.

=================== ===================================================================================
module              concern
=================== ===================================================================================
``cli``             the command and the builders of the paper's sets (MATH + DAPO, MATH + Numina, MATH test)
``sources``         reading local jsonl/parquet files and hub datasets
``schemas``         the MATH / DAPO / Numina schemas, prompt formats, the drop report
``select``          dedupe, test-set decontamination, seeded sampling, the gold check
``gym``             reasoning-gym tasks at five difficulty levels, with a held-out test set
``offline``         generated stand-ins for the sources in their own schemas (``--offline-sample``, no network)
=================== ===================================================================================
"""
