"""Where sessions live: fsspec filesystems with credentials, and the per-session lease."""
