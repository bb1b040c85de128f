"""prefect.yaml: every deployment loads, its parameters are a valid configuration, its job
variables exist in its work pool type, and the commands of the deployments page of the docs
(docs/operations/deployments.md) register it on a server: with only the local pool, what runs here;
with the cloud pools created, all of them."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.utilities.schema_tools import validate

from dreambooth_core.config import DreamBoothConfig
from flows.upload import UPLOADED

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS_PAGE = REPO / "docs" / "operations" / "deployments.md"
PROJECT = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in PROJECT["deployments"]}
TRAINING = {name: d for name, d in DEPLOYMENTS.items() if d["entrypoint"] == "flows/dreambooth.py:dreambooth_train"}
K8S_TEMPLATE = REPO / "deploy" / "kubernetes-gpu-job-template.json"
MULTINODE_TEMPLATE = REPO / "deploy" / "kubernetes-multinode-job-template.json"
# The work pool each deployment names, its type, and a base job template option.
POOLS = {
    "local-process": ("process", None),
    "dreambooth-docker": ("docker", None),
    "dreambooth-kubernetes": ("kubernetes", K8S_TEMPLATE),
    "dreambooth-kubernetes-multinode": ("kubernetes", MULTINODE_TEMPLATE),
    "dreambooth-vertex": ("vertex-ai", None),
}


def pool_variables(pool_name: str) -> dict:
    kind, template = POOLS[pool_name]
    if template:
        return json.loads(template.read_text())["variables"]
    worker = {"process": "prefect.workers.process:ProcessWorker",
              "docker": "prefect_docker.worker:DockerWorker",
              "kubernetes": "prefect_kubernetes.worker:KubernetesWorker",
              "vertex-ai": "prefect_gcp.workers.vertex:VertexAIWorker"}[kind]
    module, name = worker.split(":")
    return getattr(importlib.import_module(module), name).get_default_base_job_template()["variables"]


def test_the_four_kinds_of_work_pool_are_deployed():
    assert {d["work_pool"]["name"] for d in TRAINING.values()} == set(POOLS)


@pytest.mark.parametrize("name", TRAINING)
def test_deployment_entrypoint_and_parameters(name):
    deployment = DEPLOYMENTS[name]
    path, function = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert isinstance(getattr(module, function), Flow)
    DreamBoothConfig(**deployment["parameters"]["config"])
    for schedule in deployment.get("schedules", []):
        assert schedule["active"] is False, "example schedules stay off until a user turns them on"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_job_variables_exist_in_the_pool_and_validate(name):
    pool = DEPLOYMENTS[name]["work_pool"]
    variables = pool.get("job_variables", {})
    schema = pool_variables(pool["name"])
    assert set(variables) <= set(schema["properties"]), set(variables) - set(schema["properties"])
    assert validate(variables, schema, ignore_required=True) == []


def test_vertex_runs_longer_than_the_one_hour_default_on_a_gpu():
    variables = DEPLOYMENTS["vertex-gpu"]["work_pool"]["job_variables"]
    default = pool_variables("dreambooth-vertex")["properties"]["maximum_run_time_hours"]["default"]
    assert variables["maximum_run_time_hours"] > default == 1
    assert variables["accelerator_count"] >= 1 and variables["accelerator_type"].startswith("NVIDIA")


def test_the_generate_deployment_renders_with_valid_parameters_when_training_finishes():
    from flows.generate import dreambooth_generate
    from flows.trained_event import TRAINED

    deployment = DEPLOYMENTS["generate-local"]
    assert deployment["entrypoint"] == "flows/generate.py:dreambooth_generate"
    dreambooth_generate.validate_parameters(deployment["parameters"])
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [TRAINED] and set(trigger["parameters"]) == {"session", "storage", "storage_block"}


def test_the_publish_deployment_can_publish_each_session_when_training_finishes():
    from flows.publish import dreambooth_publish
    from flows.trained_event import TRAINED

    deployment = DEPLOYMENTS["publish-local"]
    dreambooth_publish.validate_parameters(deployment["parameters"])
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [TRAINED] and trigger["enabled"] is False  # until a user names the repo
    assert trigger["parameters"]["repo"] == "YOUR-USER/{{ event.payload.session }}"
    assert set(trigger["parameters"]) == {"session", "repo", "storage", "storage_block"}


@pytest.mark.parametrize("name", TRAINING)
def test_each_deployment_trains_the_uploads_addressed_to_it(name):
    (trigger,) = DEPLOYMENTS[name]["triggers"]
    assert trigger["expect"] == [UPLOADED]
    assert trigger["match"]["dreambooth.deployment"] == name
    assert trigger["parameters"] == {"config": "{{ event.payload.config }}"}


def page_commands(after: str) -> list[str]:
    """The pool and deploy commands of the first bash block after `after` on the deployments page."""
    page = DEPLOYMENTS_PAGE.read_text()
    block = page[page.index(after):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0] for line in block.splitlines()
            if "prefect work-pool" in line or "prefect deploy" in line]


@pytest.mark.slow
def test_the_docs_deploy_with_only_the_local_pool_then_every_deployment(prefect_api_url):
    from prefect.client.orchestration import get_client

    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO),
           "PREFECT_CLI_PROMPT": "false"}
    bin_dir = f"{Path(sys.executable).parent}/"  # the page's .venv/bin/, wherever it is here

    def typed(commands: list[str]) -> None:
        for command in commands:
            result = subprocess.run(["bash", "-c", command.replace(".venv/bin/", bin_dir)], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, command + "\n" + result.stdout[-3000:] + result.stderr[-3000:]

    local = page_commands("On this machine, with only the local pool")
    assert [c for c in local if "deploy" in c.split()] and len(local) == 3, local
    typed(local)
    with get_client(sync_client=True) as client:
        assert {"local", "generate-local"} <= {d.name for d in client.read_deployments()}
        assert client.read_work_pool("local-process").concurrency_limit == 1
    typed(page_commands("create the cloud pools first"))
    with get_client(sync_client=True) as client:
        deployed = {d.name: d for d in client.read_deployments()}
        automations = {a.name for a in client.read_automations()}
    assert set(DEPLOYMENTS) <= set(deployed)
    assert deployed["vertex-gpu"].job_variables["maximum_run_time_hours"] == 24
    # this machine is bounded by its pool's limit, not by a deployment's lease (lost when a server restarts)
    assert deployed["local"].global_concurrency_limit is None
    assert deployed["vertex-gpu"].global_concurrency_limit.limit == 4
    assert all(not s.active for d in DEPLOYMENTS for s in deployed[d].schedules)
    assert {t["name"] for d in DEPLOYMENTS.values() for t in d["triggers"]} <= automations


def test_every_deployment_sends_the_heartbeat_the_automations_expect():
    from flows.automations import HEARTBEAT_SECONDS

    for name, deployment in DEPLOYMENTS.items():
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS), name


def test_the_flow_parameter_form_shows_the_configuration_in_its_sections():
    """What the Prefect UI draws its form from: the flow's parameter schema."""
    from flows.dreambooth import dreambooth_train

    schema = dreambooth_train.parameters.model_dump()
    definitions = schema["definitions"]
    config = definitions["DreamBoothConfig"]["properties"]
    sections = [name for name in config if name != "session"]
    assert sections == ["inputs", "base_model", "captions", "checks", "training", "samples", "evaluation", "export",
                        "runtime"]
    kinds = [config[name]["$ref"].rsplit("/", 1)[1] for name in sections]
    assert all(definitions[kind]["description"] for kind in kinds)  # the section's docstring
    training = definitions["TrainingSettings"]["properties"]
    assert training["learning_rate"]["description"].startswith("Learning rate")
    for name in ("local", "docker-gpu"):
        parameters = DEPLOYMENTS[name]["parameters"]
        assert validate(parameters, schema, raise_on_error=False, ignore_required=True) == [], name
