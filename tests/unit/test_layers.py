"""Imports point down only: data/augment/models < methods < config < eval < runs < train <
tune/cluster/pipeline < cli, with the collectives and REPRLAB_HOME below them all and tracking
a sink that imports none of them. Fails naming the file and the import that points up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "reprlab"

LAYERS = {
    "home": 0,
    "distributed": 0,
    "driver_actors": 0,
    "signals": 0,
    "storage": 0,
    "data": 1,
    "augment": 1,
    "models": 1,
    "methods": 2,
    "config": 3,
    "eval": 4,
    "runs": 5,
    "train": 6,
    "tune": 7,
    "cluster": 7,
    "pipeline": 7,
    "cli": 8,
}
SINKS = {"tracking": {"home", "signals"}}
"""Parts any layer may import, each with the only parts it may import itself."""


def part_of(module: str) -> str:
    """`reprlab.train.loop` -> `train`; `reprlab.cli` -> `cli`."""
    return module.split(".")[1]


def reprlab_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `reprlab.*` import in a file, module-level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.startswith("reprlab.")]
    return found


def up_edges(path: Path, package: Path = PACKAGE) -> list[str]:
    """The imports of one file that point up (or out of a sink), as `file:line imports X`."""
    module = "reprlab." + ".".join(path.relative_to(package).with_suffix("").parts)
    source = part_of(module) if module != "reprlab.__init__" else None
    problems = []
    for line, imported in reprlab_imports(path):
        target = part_of(imported)
        if source is None or target == source:
            continue
        if source in SINKS:
            allowed = target in SINKS[source]
        elif target in SINKS:
            allowed = True
        else:
            allowed = LAYERS[target] < LAYERS[source] or (
                LAYERS[target] == LAYERS[source] and target != "cli"
            )
        if not allowed:
            problems.append(f"{path.relative_to(package.parent)}:{line} imports {imported}")
    return problems


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    parts -= {"__init__", "__pycache__"}
    assert parts <= set(LAYERS) | set(SINKS)


def test_imports_point_down_only() -> None:
    problems = [edge for path in sorted(PACKAGE.rglob("*.py")) for edge in up_edges(path)]
    assert not problems, "imports that point up:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source,imported",
    [
        ("models/norm.py", "reprlab.methods.base"),
        ("eval/fake.py", "reprlab.train.loop"),
        ("tracking/fake.py", "reprlab.data.shards"),
        ("data/fake.py", "reprlab.cli"),
    ],
)
def test_an_upward_import_is_named(tmp_path, source: str, imported: str) -> None:
    package = tmp_path / "reprlab"
    path = package / source
    path.parent.mkdir(parents=True)
    path.write_text(f"import math\n\nfrom {imported} import thing\n")
    assert up_edges(path, package) == [f"reprlab/{source}:3 imports {imported}"]
