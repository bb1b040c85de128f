"""One folder per session on fsspec storage, the single source of truth: the folder and
its atomic writes, every path inside it, its typed state files, checkpoints and lease."""
