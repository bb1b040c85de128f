"""What people watch: loss log and plot, training progress, images and summaries for the UI,
terminal progress bars, and the state of sessions. Plain Python: no Prefect here."""
