"""The repository's shape: the top level users expect, a plain library that never imports
Prefect, imports that only go downward, and no import circle."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LIBRARY = "dreambooth_core"
EDGE = {"prefect", "flows", "tasks", "blocks"}
# The library's packages from the bottom up: a package imports only from earlier levels.
LEVELS = [{"errors", "hashing"}, {"config"}, {"session"}, {"reports"}, {"captions"}, {"photos", "model"},
          {"families"}, {"training"}, {"generation", "export"}, {"evaluation"}, {"publish"}]


def modules(package: str) -> dict[str, Path]:
    """{dotted module name: file} of every module in a top-level package of the repository."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def level_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next(i for i, level in enumerate(LEVELS) if part in level)


# Folders whose lines were wrapped (all their subfolders too), and the most any line there may take
# (the developers' guide: <= 110). tests/ and benchmarks/ are to follow.
WRAPPED = [LIBRARY, "flows", "tasks", "blocks"]
MAX_LINE = 110


def test_lines_stay_short_in_the_wrapped_folders():
    long = [f"{path.relative_to(REPO)}:{number}: {len(line)}" for folder in WRAPPED
            for path in sorted((REPO / folder).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > MAX_LINE]
    assert not long, f"lines over {MAX_LINE} characters: {long}"


def test_top_level_layout():
    for name in ("flows", "tasks", "blocks", "tests", LIBRARY, "prefect.yaml", "pyproject.toml", "README.md"):
        assert (REPO / name).exists(), name


def test_every_library_package_has_a_level():
    packages = {name.split(".")[1] for name in modules(LIBRARY) if "." in name}
    assert packages == set().union(*LEVELS)


def test_the_library_never_imports_prefect_or_the_pipeline_around_it():
    offenders = {name: sorted(top for top in {i.split(".")[0] for i in imports_of(path)} if top in EDGE)
                 for name, path in modules(LIBRARY).items()}
    assert not {name: found for name, found in offenders.items() if found}


def test_the_library_imports_without_prefect_installed():
    blocker = ("import importlib, pkgutil, sys\n"
               "class NoPrefect:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'prefect': raise ImportError('prefect is blocked')\n"
               "sys.meta_path.insert(0, NoPrefect())\n"
               + "".join(f"import {module}\n" for module in modules(LIBRARY)))
    result = subprocess.run([sys.executable, "-c", blocker], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_library_imports_only_go_downward():
    upward = []
    for name, path in modules(LIBRARY).items():
        if "." not in name:
            continue
        own = name.split(".")[1]
        for target in imports_of(path):
            parts = target.split(".")
            if parts[0] != LIBRARY or len(parts) < 2 or parts[1] == own:
                continue
            if parts[1] in set().union(*LEVELS) and level_of(target) >= level_of(name):
                upward.append(f"{name} -> {target}")
    assert not upward


def test_the_edge_points_inward():
    """blocks never import tasks or flows; tasks never import flows."""
    wrong = [f"{name} -> {target}" for package, forbidden in (("blocks", {"tasks", "flows"}), ("tasks", {"flows"}))
             for name, path in modules(package).items() for target in imports_of(path)
             if target.split(".")[0] in forbidden]
    assert not wrong


def test_tasks_hold_the_tasks_and_only_they_do():
    def tasks_in(path: Path) -> list[str]:
        tree = ast.parse(path.read_text())
        return [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                and any("task" == getattr(d.func if isinstance(d, ast.Call) else d, "id", None)
                        for d in node.decorator_list)]
    helpers = {"tasks", "tasks.artifacts", "tasks.prefect_api"}  # what the tasks show in the UI, and how
    assert all(tasks_in(path) for name, path in modules("tasks").items() if name not in helpers)
    elsewhere = [name for package in (LIBRARY, "flows", "blocks")
                 for name, path in modules(package).items() if tasks_in(path)]
    assert not elsewhere


def test_there_is_no_import_circle():
    project = {}
    for package in (LIBRARY, "tasks", "flows", "blocks"):
        project |= modules(package)

    def targets(name: str) -> set[str]:
        return {t for t in imports_of(project[name]) if t in project and t != name}

    graph = {name: targets(name) for name in project}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return path + [name, target]
            if target not in state and (cycle := visit(target, path + [name])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle)


def test_prefect_yaml_deployments_load_the_flow_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    from dreambooth_core.config import DreamBoothConfig

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name in {"dreambooth-train", "dreambooth-generate", "dreambooth-publish"}
        flow.validate_parameters(deployment["parameters"])
        if flow.name == "dreambooth-train":
            DreamBoothConfig(**deployment["parameters"]["config"])


# A family's name in code: an identifier, module or family key (docstrings and messages may name them).
FAMILY_NAMES = re.compile(r"(?i)(sd1|sd2|sd15|sd21|sdxl|flux|klein|stable_?diffusion|text_time)")


def family_names_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    keys = set(family_of_keys())
    found = []
    for node in ast.walk(tree):
        names = [getattr(node, field) for field in ("id", "attr", "name", "module", "arg")
                 if isinstance(getattr(node, field, None), str)]
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and node.value in keys:
            names.append(node.value)
        found += [f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}: {name}"
                  for name in names if FAMILY_NAMES.search(name) or name in keys]
    return found


def family_of_keys() -> list[str]:
    from dreambooth_core.families import FAMILIES

    return [key for family in FAMILIES for key in family.keys]


def test_no_code_names_a_family_outside_the_families_package():
    """What differs between families lives in dreambooth_core/families, one module each."""
    found = [line for package in (LIBRARY, "flows", "tasks") for name, path in modules(package).items()
             if not name.startswith(f"{LIBRARY}.families") for line in family_names_in(path)]
    assert not found
