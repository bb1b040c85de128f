"""The DreamBooth pipeline's plain library: everything a run does, without Prefect.

Packages, each importing only from those above it in this list (tests/test_layout.py
checks it):

    errors, hashing   user-facing errors; short stable hashes
    config            DreamBoothConfig and its sections
    session           the session folder, its paths, typed state files, checkpoints, lease
    reports           loss log and plot, progress, images for the UI, status, terminal bars
    captions          tokens, captions, the tokenizer's view of an identifier
    photos, model     checking and preparing photos; fetching and describing the base model
    training          the plan, the chunk body, the trainer, data, memory, distributed
    generation        class images and samples (samples reach training as a hook)
    export            the output files and snapshots (snapshots reach training as a hook)

The Prefect side sits beside it: tasks/ (every @task), flows/ (the flow, the CLI,
deployments and events) and blocks/ (Prefect blocks).
"""
