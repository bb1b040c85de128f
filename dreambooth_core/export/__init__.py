"""Turning the final checkpoint into files other tools load. Plain Python: no prefect."""
