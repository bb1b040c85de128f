"""A run over several machines on Kubernetes: the multi-node work-pool template as prefect-kubernetes'
worker renders it, and what each of its pods does with the flow run."""

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from dreambooth_core.config import DreamBoothConfig
from flows import machines

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "kubernetes-multinode-job-template.json"
CLAIM = {"name": "sessions", "persistentVolumeClaim": {"claimName": "dreambooth-sessions"}}
ENDPOINT = "$(JOB_NAME)-0.dreambooth-nodes:29500"


def test_the_template_renders_a_two_node_run_as_one_indexed_pod_per_node():
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    run = FlowRun(flow_id=uuid.uuid4(), name="happy-otter")
    values = {"nodes": 2, "gpu_count": 8, "image": "dreambooth:latest", "session_volume": CLAIM,
              "env": {"PREFECT_API_URL": "http://prefect-server:4200/api"}}
    configuration = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        json.loads(TEMPLATE.read_text()), values))  # the worker's own validation runs here
    configuration.prepare_for_flow_run(run)
    job = configuration.job_manifest
    assert job["metadata"]["generateName"] == "happy-otter-"
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    [container] = pod["containers"]
    # Every pod runs the same command; Kubernetes tells each its index (JOB_COMPLETION_INDEX).
    assert container["args"] == ["python", "-m", "flows.machines", "--nnodes=2",
                                 f"--rdzv-endpoint={ENDPOINT}"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"]["value"] == str(run.id)
    assert env["PREFECT_API_URL"]["value"] == "http://prefect-server:4200/api"
    job_name = env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert job_name == "metadata.labels['batch.kubernetes.io/job-name']"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["ports"] == [{"name": "rendezvous", "containerPort": 29500}]
    # Pod 0 is <job>-0.dreambooth-nodes: its hostname under the headless Service of that name.
    assert pod["subdomain"] == "dreambooth-nodes"
    service = (REPO / "deploy" / "kubernetes-multinode-service.yaml").read_text()
    assert "name: dreambooth-nodes" in service and "clusterIP: None" in service
    # One pod per node, the session storage shared, NCCL's /dev/shm in memory.
    label = job["spec"]["template"]["metadata"]["labels"]
    [rule] = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"].items() <= label.items()
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["sessions"] == CLAIM
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == {"sessions": "/sessions",
                                                                               "dshm": "/dev/shm"}


@pytest.fixture
def flow_run(prefect_api_url):
    """A flow run of a deployment of 16 GPUs, as a work pool hands it to the pods."""
    from prefect.client.orchestration import get_client

    config = DreamBoothConfig(session="s", storage="/sessions", model="tiny", gpus=16)
    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(flow_id=client.create_flow_from_name("dreambooth-train"),
                                              name=f"nodes-{uuid.uuid4().hex[:6]}",
                                              entrypoint="flows/dreambooth.py:dreambooth_train")
        return client.create_flow_run_from_deployment(
            deployment, parameters={"config": config.model_dump(mode="json")}).id


def parameters(flow_run_id) -> DreamBoothConfig:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return DreamBoothConfig.model_validate(client.read_flow_run(flow_run_id).parameters["config"])


def test_pod_0_records_the_run_s_place_for_the_flow_and_pod_1_trains_with_it(flow_run, monkeypatch):
    """Pod 1's training processes are not started (they would wait for a machine 0)."""
    endpoint = "happy-otter-x7k2p-0.dreambooth-nodes:29500"
    monkeypatch.setenv(machines.FLOW_RUN, str(flow_run))
    monkeypatch.setattr(machines.os, "execv", lambda *args: pytest.fail("pod 0 ran the engine early"))
    lead = machines.place_flow_run(flow_run, 2, endpoint, 0)
    recorded = parameters(flow_run).runtime
    assert (recorded.nnodes, recorded.node_rank, recorded.rdzv_endpoint) == (2, 0, endpoint) == (
        lead.runtime.nnodes, lead.runtime.node_rank, lead.runtime.rdzv_endpoint)

    trained = []
    monkeypatch.setattr(machines, "train_on_this_machine", lambda config: trained.append(config) or 0)
    monkeypatch.setenv(machines.INDEX, "1")
    assert machines.main(["--nnodes", "2", "--rdzv-endpoint", endpoint]) == 0
    [config] = trained
    assert (config.runtime.node_rank, config.runtime.nnodes, config.training.gpus) == (1, 2, 16)
    assert config.training_values() == lead.training_values()
    assert parameters(flow_run).runtime.node_rank == 0  # a follower records nothing


def test_a_config_the_pool_s_nodes_cannot_split_ends_in_one_error(flow_run, monkeypatch, capsys):
    monkeypatch.setenv(machines.FLOW_RUN, str(flow_run))
    monkeypatch.setenv(machines.INDEX, "1")
    assert machines.main(["--nnodes", "3", "--rdzv-endpoint", "job-0.dreambooth-nodes:29500"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: machine 1 of 3: the flow run's config is not valid here: --gpus 16 is the "
                          "total over --nnodes 3 machines") and "Traceback" not in err
