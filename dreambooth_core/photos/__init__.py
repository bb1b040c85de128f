"""Reading, checking and preparing the user's photos. Plain Python: no prefect."""
