"""Which code a rule runs: its script plus every pneumoflow module the script reaches.

Snakemake's `code` trigger watches only a rule's `script:` file, and our scripts
are four-line wrappers around this package (each calls
pneumoflow.stages.<rule>.run). The rules therefore carry
`code_digest(script)` as a param: an edit to any module a script reaches
(imported at the top or inside a function, followed transitively, package
`__init__` files included) changes that digest and reruns the rule's jobs and
what depends on them, and nothing else. New modules are covered as soon as a
reached module imports them; nothing is listed by hand.

Stdlib only and cached per file: the Snakefile calls it on every parse.
Imports by string (`importlib.import_module`) are not seen; tests/test_codeclosure.py
checks that the package has none.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import cache
from pathlib import Path

PACKAGE = "pneumoflow"
SRC = Path(__file__).resolve().parents[2]  # the folder holding the package


def imports(path: Path) -> tuple[tuple[str, bool], ...]:
    """(absolute module name, imported inside a function?) of each import in the file `path`;
    relative imports are resolved against the file's package. `from a import b` gives `a`
    and `a.b` (b may be a submodule)."""
    stat = path.stat()
    return _imports(path, stat.st_mtime_ns, stat.st_size)


@cache
def _imports(path: Path, mtime_ns: int, size: int) -> tuple[tuple[str, bool], ...]:
    package = _package_of(path)
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, lazy) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child.module, child.level, package)
                found.append((base, lazy))
                found.extend((f"{base}.{alias.name}", lazy) for alias in child.names if alias.name != "*")
            visit(child, inner)

    visit(ast.parse(path.read_bytes(), filename=str(path)), False)
    return tuple(found)


def _package_of(path: Path) -> str | None:
    """Dotted package of a file inside SRC (None for a script outside it)."""
    try:
        parts = path.resolve().relative_to(SRC).with_suffix("").parts
    except ValueError:
        return None
    return ".".join(parts[:-1]) or None


def _absolute(module: str | None, level: int, package: str | None) -> str:
    if not level:
        return module or ""
    if package is None:
        raise ValueError(f"relative import (level {level}) outside the {PACKAGE} package")
    base = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join([*base, *([module] if module else [])])


def module_files(module: str) -> list[Path]:
    """Files that `import module` runs from this package: each package's __init__.py on the
    way and the module itself ([] for third-party or stdlib modules, or a plain attribute)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return []
    target = SRC.joinpath(*parts)
    own = [p for p in (target.with_suffix(".py"), target / "__init__.py") if p.is_file()]
    if not own:
        return []
    parents = [SRC.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    return [p for p in parents if p.is_file()] + own


def walk(script: str | Path) -> tuple[dict[Path, bool], dict[str, bool]]:
    """({package file: reached only through lazy imports?}, {top-level third-party module:
    only ever imported lazily?}) for `script` and the package modules it reaches."""
    local: dict[Path, bool] = {}
    third: dict[str, bool] = {}
    todo, seen = [(Path(script).resolve(), False)], set()
    while todo:
        path, lazy = todo.pop()
        if (path, lazy) in seen:
            continue
        seen.add((path, lazy))
        for module, inner in imports(path):
            inner = lazy or inner
            top = module.split(".")[0]
            if top == PACKAGE:
                for target in module_files(module):
                    local[target] = local.get(target, True) and inner
                    todo.append((target, inner))
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third[top] = third.get(top, True) and inner
    return local, third


def closure(script: str | Path) -> list[Path]:
    """The script and every package file it reaches, sorted."""
    local, _ = walk(script)
    return sorted({Path(script).resolve(), *local})


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _bytes_digest(path, stat.st_mtime_ns, stat.st_size)


@cache
def _bytes_digest(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_digest(script: str | Path, extra: tuple[str | Path, ...] = ()) -> str:
    """Short sha256 over the names (relative to the package root) and bytes of the closure of
    `script` and of the `extra` files (e.g. the rule's conda env file): the same code, the
    same digest, wherever the repository lives."""
    digest = hashlib.sha256()
    for path in [*closure(script), *(Path(p).resolve() for p in extra)]:
        name = path.relative_to(SRC).as_posix() if path.is_relative_to(SRC) else path.name
        digest.update(f"{name}\0{_file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]
