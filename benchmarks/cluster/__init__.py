"""GRPO vs LENS on one Ray cluster: ``run.sh`` runs both jobs, ``report.py`` compares their logs."""
