"""The package's import graph by layer: `python benchmarks/import_graph.py [--json]`.

Layers, lowest first (README, Layout): core, formats, models | sources, tracking,
training, stages, then the package's top-level modules (cli, predict). A module may import
its own layer and the ones below. Prints each layer's modules and lines, every import from
a lower layer to a higher one (target: none), and the largest module. Imports inside
functions count too. tests/test_layers.py asserts there is no upward import.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = {"core": 0, "formats": 1, "models": 2, "sources": 2, "tracking": 3, "training": 4, "stages": 5}
TOP = 6  # pneumoflow/*.py: the command line and `pneumoflow predict`; pneumoflow/__init__ is 0


def modules(src: Path = SRC) -> dict[str, Path]:
    """{dotted name: file} of every module of the package."""
    found = {}
    for path in sorted((src / "pneumoflow").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(name: str) -> int:
    """The layer of a dotted module name; the package itself (its __version__) is the lowest."""
    parts = name.split(".")
    if len(parts) == 1:
        return 0
    return LAYERS.get(parts[1], TOP)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `path` imports (anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def graph(src: Path = SRC) -> dict:
    known = modules(src)
    edges = {name: imports(name, path, known) for name, path in known.items()}
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer(b) > layer(a))
    lines = {name: len(path.read_text().splitlines()) for name, path in known.items()}
    largest = max(lines, key=lines.get)
    by_layer: dict[int, list[str]] = {}
    for name in known:
        by_layer.setdefault(layer(name), []).append(name)
    return {
        "modules": len(known),
        "layers": len(by_layer),
        "by_layer": {str(k): sorted(v) for k, v in sorted(by_layer.items())},
        "upward_imports": upward,
        "largest_module": [largest, lines[largest]],
    }


def main() -> None:
    result = graph()
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
        return
    for rank, names in result["by_layer"].items():
        print(f"layer {rank}: {', '.join(n.removeprefix('pneumoflow.') for n in names)}")
    print(f"{result['modules']} modules in {result['layers']} layers; largest {result['largest_module']}")
    print(f"imports from a lower layer to a higher one: {len(result['upward_imports'])}")
    for edge in result["upward_imports"]:
        print("  ", edge)


if __name__ == "__main__":
    main()
