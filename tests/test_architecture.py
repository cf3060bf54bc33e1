"""The layout's rules, checked on the source: the contracts module has no dependencies, no import
cycle between pipeline's packages, demo code never reaches what ships to AWS."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any level (function-local imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts)


def test_the_contracts_module_imports_the_standard_library_only():
    imports = imported_modules(ROOT / "pipeline" / "contracts.py")
    third_party = {name for name in imports if name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}}
    assert third_party == set()


def test_no_import_cycle_between_pipelines_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sources("pipeline"):
        source = module_name(path).split(".")
        if len(source) < 3:  # top-level modules (cli, prompt, storage...) are not packages
            continue
        for name in imported_modules(path):
            target = name.split(".")
            if target[0] == "pipeline" and len(target) >= 3 and target[1] != source[1]:
                if (ROOT / "pipeline" / target[1]).is_dir():
                    graph[source[1]].add(target[1])

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph[node]:
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    for package in list(graph):
        assert cycle_from(package, package, (package,)) is None, " -> ".join(cycle_from(package, package, (package,)))


def test_demo_code_is_imported_only_by_the_demo_and_the_cli():
    allowed = {"pipeline.cli"}
    for path in sources("pipeline", "lambdas", "infra", "training_image"):
        name = module_name(path)
        if name.startswith("pipeline.local") or name in allowed:
            continue
        offending = {module for module in imported_modules(path) if module.startswith("pipeline.local")}
        assert not offending, f"{name} imports {sorted(offending)}"


def closure(module: str) -> set[str]:
    """The pipeline modules ``module`` imports, directly or through others (function-local imports included)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        todo += [imported for imported in imported_modules(path) if imported.startswith("pipeline")]
    return seen


def test_the_training_image_and_the_pulumi_program_need_no_aws_libraries():
    """The training image installs requirements/training*.txt only (no boto3, smart_open); the Pulumi
    program requirements.txt only. Neither may reach pipeline.storage."""
    assert "pipeline.storage" not in closure("pipeline.training.sagemaker")
    for path in sources("infra"):
        assert "pipeline.storage" not in closure(module_name(path)), module_name(path)
