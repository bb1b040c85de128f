"""A --gpus N run: torchrun's agent, the ranks it starts, and the folder they talk through.

Several processes (one per GPU; CPU processes for tests), started by torchrun once per run
(worker_group.py), each run the chunk body (chunk.py) on their own share of every step's batch
(its rows of one process's draws for the whole batch: data/batches.py); DDP averages the
gradients in buckets during the backward pass (NCCL on GPUs, gloo on CPUs; data_parallel.py),
and every process takes the same optimizer step, so the weights stay identical. Rank 0 commits
the checkpoint and runs the hooks. Everything stays a function of (seed, step, number of
processes), so resume is exact for a given --gpus.
"""
