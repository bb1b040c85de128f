"""Publishing a session to a Hugging Face model repo: its files and a model card. Plain Python: no prefect."""
