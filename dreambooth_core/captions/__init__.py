"""Identifier tokens and captions for the prepared photos. Plain Python: no prefect."""
