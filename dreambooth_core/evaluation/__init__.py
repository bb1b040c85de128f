"""Judging trained steps as the DreamBooth paper does: subject and prompt fidelity. Plain Python:
no prefect."""
