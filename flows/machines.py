"""One pod of a run over several machines, as a Kubernetes work pool starts them
(deploy/kubernetes-multinode-job-template.json: an Indexed Job, one pod per node):

    python -m flows.machines --nnodes N --rdzv-endpoint HOST:PORT

Every pod gets the flow run's id from the worker, and its index from Kubernetes
(JOB_COMPLETION_INDEX). Pod 0 is machine 0: it writes the run's place (--nnodes,
--rdzv-endpoint) into the flow run's config and runs the flow as any deployment does
(`python -m prefect.engine`), so the run's settings stay in one place, the flow run.
The other pods are machines 1 to N-1: each reads that config and trains with machine 0
as `dreambooth train ... --node-rank K` does.
"""

from __future__ import annotations

import argparse
import os
import sys
from uuid import UUID

from pydantic import ValidationError

from dreambooth_core.config import DreamBoothConfig
from dreambooth_core.errors import USER_ERRORS
from flows.cli import EXIT_USER_ERROR, train_on_this_machine

INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job
FLOW_RUN = "PREFECT__FLOW_RUN_ID"  # set by the worker


def placed(config: dict, nnodes: int, endpoint: str, node_rank: int) -> DreamBoothConfig:
    """The flow run's config (its parameter, as JSON) on machine `node_rank` of `nnodes`."""
    runtime = {"nnodes": nnodes, "node_rank": node_rank, "rdzv_endpoint": endpoint}
    dumped = DreamBoothConfig.model_validate(config).model_dump(mode="json")
    return DreamBoothConfig.model_validate({**dumped, "runtime": {**dumped["runtime"], **runtime}})


def place_flow_run(flow_run_id: UUID, nnodes: int, endpoint: str, node_rank: int) -> DreamBoothConfig:
    """Machine 0 records the run's place in the flow run's parameters (what the flow then runs
    with); the others read them. Either way, this machine's config."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(flow_run_id).parameters
        config = placed(parameters["config"], nnodes, endpoint, node_rank)
        if node_rank == 0:
            recorded = {**parameters, "config": config.model_dump(mode="json")}
            client.update_flow_run(flow_run_id, parameters=recorded)
    return config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.machines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nnodes", type=int, required=True)
    parser.add_argument("--rdzv-endpoint", required=True)
    args = parser.parse_args(argv)
    node_rank = int(os.environ.get(INDEX, "0"))
    try:
        config = place_flow_run(UUID(os.environ[FLOW_RUN]), args.nnodes, args.rdzv_endpoint, node_rank)
    except ValidationError as exc:  # the deployment's config does not fit the pool's nodes
        print(f"error: machine {node_rank} of {args.nnodes}: the flow run's config is not valid here: "
              + "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()), file=sys.stderr)
        return EXIT_USER_ERROR
    if node_rank == 0:
        os.execv(sys.executable, [sys.executable, "-m", "prefect.engine"])
    try:
        return train_on_this_machine(config)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
