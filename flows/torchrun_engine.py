"""A deployment's flow run on every process torchrun starts (a pod with several GPUs, or
several pods), as the work pool's container command:

    torchrun --nproc-per-node 4 -m flows.torchrun_engine

Rank 0 runs the flow run the worker created, as `python -m prefect.engine` does (its id in
PREFECT__FLOW_RUN_ID); the other ranks train the chunks it sends
(dreambooth_core/training/torchrun.py). The config's `training.gpus` must equal torchrun's
world size.
"""

import runpy

from dreambooth_core.training.torchrun_env import torchrun_rank


def main() -> None:
    if torchrun_rank():
        from dreambooth_core.training.torchrun import follow_chunks

        follow_chunks()
        return
    from dreambooth_core.training.torchrun import leading_followers

    with leading_followers():  # the others end with the flow run, however it ends
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
