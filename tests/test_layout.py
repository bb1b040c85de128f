"""The repository's shape: the top level users expect, Prefect kept at the edge."""

import ast
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PLAIN_PACKAGES = ["tasks.config", "tasks.session", "tasks.training.run", "tasks.export.outputs", "tasks.dataset.validate",
                  "tasks.model.fetch", "tasks.dataset.prepare", "tasks.captions.manifest",
                  "tasks.captions.token_report", "tasks.generation.class_images",
                  "tasks.generation.samples", "tasks.storage.lease", "tasks.reports.monitor",
                  "tasks.reports.status", "tasks.reports.summary", "tasks.reports.images"]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_top_level_layout():
    for name in ("flows", "tasks", "blocks", "tests", "prefect.yaml", "pyproject.toml", "README.md"):
        assert (REPO / name).exists(), name


def test_only_flows_and_task_wrappers_import_prefect():
    offenders = [p.relative_to(REPO) for p in (REPO / "tasks").rglob("*.py")
                 if p.parent != REPO / "tasks" and "prefect" in imports_of(p)]
    assert not offenders, f"plain code imports prefect: {offenders}"


def test_plain_code_imports_without_prefect_installed():
    blocker = ("import sys\n"
               "class NoPrefect:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'prefect': raise ImportError('prefect is blocked')\n"
               "sys.meta_path.insert(0, NoPrefect())\n"
               + "".join(f"import {module}\n" for module in PLAIN_PACKAGES))
    result = subprocess.run([sys.executable, "-c", blocker], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_prefect_yaml_deployments_load_the_flow_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    from tasks.config import DreamBoothConfig

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name == "dreambooth-train"
        DreamBoothConfig(**deployment["parameters"]["config"])
