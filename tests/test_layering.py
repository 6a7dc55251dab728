"""The dependency rules of DESIGN.md, checked on the source: mappings are pure and see only
the domain; bridge never names a platform; adapters never import each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("mappings"), ids=lambda p: str(p.relative_to(ROOT)))
def test_mappings_import_only_the_domain_errors_and_pure_libraries(path: Path) -> None:
    io_modules = {
        "asyncio",
        "socket",
        "subprocess",
        "sqlite3",
        "os",
        "time",
        "http",
        "urllib.request",
    }
    for name in imports(path):
        top = name.split(".")[0]
        assert name not in io_modules, f"{path.name} imports {name}"
        assert top not in io_modules, f"{path.name} imports {name}"
        assert name.startswith(("bridge.domain", "bridge.errors", "mappings")) or top in (
            STDLIB | {"pydantic", "__future__"}
        ), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", sources("bridge"), ids=lambda p: str(p.relative_to(ROOT)))
def test_bridge_never_imports_a_platform(path: Path) -> None:
    for name in imports(path):
        assert not name.startswith(("adapters", "mappings", "demo")), f"{path.name} imports {name}"


@pytest.mark.parametrize("platform", ["optoro", "returnlogic", "kibo"])
def test_adapters_never_import_each_other(platform: str) -> None:
    others = {"optoro", "returnlogic", "kibo"} - {platform}
    for path in sources(f"adapters/{platform}"):
        for name in imports(path):
            parts = name.split(".")
            assert not (parts[0] == "adapters" and len(parts) > 1 and parts[1] in others), (
                f"{path.relative_to(ROOT)} imports {name}"
            )
            assert not (parts[0] == "mappings" and len(parts) > 1 and parts[1] in others), (
                f"{path.relative_to(ROOT)} imports {name}"
            )
