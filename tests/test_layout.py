"""The package's layout rules, read from the source with ``ast`` (nothing is imported).

- The graph of imports between ``slt_basins`` modules (module level and inside functions) has no
  cycle, and every import goes to a module of the same or an earlier layer of ``LAYERS`` (the
  layering documented on the Getting started page, docs/getting-started.md#package-layout).
  An import's edge goes to the module it names (``from . import checkpoint`` to
  ``slt_basins.checkpoint``, ``from . import estimate_llc`` to the package's ``__init__``); the
  parent packages that Python loads first are not counted, or every re-export would be a cycle.
  Imports under ``if TYPE_CHECKING:`` count: a type-only import against the layering is still one.
- No function has more than ``MAX_FUNCTION_LINES`` lines of code, not counting its docstring,
  blank lines and comment-only lines.
"""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = "slt_basins"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_FUNCTION_LINES = 80

# The documented layering, lowest first: a module may import modules of its own layer or of earlier
# ones (the cycle test keeps imports within a layer acyclic). "toys" stands for the subpackage and
# all its modules; "slt_basins" is the package's __init__, which re-exports the public API.
LAYERS: list[set[str]] = [
    {"errors"},
    {"samplers", "data", "losses", "functional", "checkpoint", "diagnostics", "toys",
     "operators", "curvature", "refine"},
    {"options"},
    {"chains", "result"},
    {"targets", "distributed", "checks"},
    {"sampling"},
    {"calibration"},
    {"llc"},
    {"multitemperature", "compare", "reproduce", "trajectory", "localization"},
    {"slt_basins"},
    {"cli"},
]


def _module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package (subpackages too)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute dotted name of ``from <level dots><module> import ...`` inside ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]  # a plain module's relative imports start from its package
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _targets(importer: str, node: ast.AST) -> set[str]:
    """The package modules one import statement loads (a name may be a submodule or an attribute)."""
    found: set[str] = set()

    def add(name: str) -> None:
        # the longest prefix of ``name`` that is a module of the package
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            candidate = ".".join(parts[:k])
            if candidate in MODULES:
                found.add(candidate)
                return

    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                add(alias.name)
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(importer, node.level, node.module)
        if base != PACKAGE and not base.startswith(PACKAGE + "."):
            return found
        if base not in MODULES or not _is_package(base):
            add(base)
            return found
        for alias in node.names:
            # ``from . import checkpoint as _ckpt`` names the module in ``names``; any other name
            # is an attribute of the package's __init__
            sub = f"{base}.{alias.name}"
            found.add(sub if sub in MODULES else base)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (self-imports dropped)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(module, node)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search, colouring)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _layer(module: str) -> int:
    short = module.split(".")[1] if module != PACKAGE else PACKAGE
    for i, layer in enumerate(LAYERS):
        if short in layer:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py:LAYERS; add it there "
                         "and to the Package layout paragraph of docs/getting-started.md")


def test_import_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert f"{PACKAGE}.checkpoint" in graph[f"{PACKAGE}.sampling"]  # from . import checkpoint as _ckpt
    assert f"{PACKAGE}.toys.rlct" in graph[f"{PACKAGE}.toys.polynomial"]  # from .rlct import ...
    assert f"{PACKAGE}.toys" in graph[f"{PACKAGE}.reproduce"]  # from .toys import ...
    assert f"{PACKAGE}.reproduce" in graph[f"{PACKAGE}.cli"]  # inside a function
    assert PACKAGE in graph[f"{PACKAGE}.cli"]  # from . import estimate_llc (an attribute)
    assert graph[f"{PACKAGE}.errors"] == set()


def test_resolution_of_relative_and_absolute_imports():
    parse = lambda src: ast.parse(src).body[0]  # noqa: E731
    toys_mod = f"{PACKAGE}.toys.polynomial"
    assert _targets(toys_mod, parse("from .. import errors")) == {f"{PACKAGE}.errors"}
    assert _targets(toys_mod, parse("from .. import errors, LLCResult")) == {PACKAGE, f"{PACKAGE}.errors"}
    assert _targets(toys_mod, parse("from ..llc import estimate_llc")) == {f"{PACKAGE}.llc"}
    assert _targets(f"{PACKAGE}.toys", parse("from .rlct import RLCT")) == {f"{PACKAGE}.toys.rlct"}
    assert _targets(f"{PACKAGE}.cli", parse("import slt_basins.toys.rlct")) == {f"{PACKAGE}.toys.rlct"}
    assert _targets(f"{PACKAGE}.cli", parse("from slt_basins.llc import x")) == {f"{PACKAGE}.llc"}
    assert _targets(f"{PACKAGE}.cli", parse("import numpy as np")) == set()


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle inside slt_basins: " + " -> ".join(cycle)


def test_imports_follow_the_documented_layers():
    bad = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
           for m, targets in sorted(import_graph().items()) for t in sorted(targets)
           if _layer(t) > _layer(m)]
    assert not bad, "imports against the layering of tests/test_layout.py:LAYERS:\n" + "\n".join(bad)


# ---- function length --------------------------------------------------------------------------

def _code_lines(path: Path) -> set[int]:
    """Line numbers holding code: any token other than comments, newlines and indentation."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    lines: set[int] = set()
    with io.open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type not in skip:
                lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, lines of code)`` for every function in ``path``.

    A function's lines of code are its body's lines holding code (a multi-line string or
    expression counts every line it spans), without its docstring; nested functions count within
    their parent, and are reported on their own too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    code = _code_lines(path)
    out = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = child.body
                if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                        and isinstance(body[0].value.value, str)):
                    body = body[1:]
                n = 0
                if body:
                    first = body[0]
                    start = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
                    n = len(code & set(range(start, child.end_lineno + 1)))
                name = f"{prefix}{child.name}"
                out.append((name, child.lineno, n))
                walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def test_function_length_counts_code_only(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('def f(x):\n    """Doc.\n\n    More doc.\n    """\n    # a comment\n\n'
                   '    y = (x +\n         1)\n    return y  # trailing comment\n'
                   'class C:\n    def g(self):\n        @staticmethod\n        def h():\n            return 1\n'
                   '        return h()\n')
    assert function_lengths(src) == [("f", 1, 3), ("C.g", 12, 4), ("C.g.h", 14, 1)]


def test_no_function_longer_than_80_lines():
    offenders = [f"{path.relative_to(ROOT.parent)}:{line} {name}: {n} lines"
                 for path in MODULES.values() for name, line, n in function_lengths(path)
                 if n > MAX_FUNCTION_LINES]
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines of code (docstring, blank "
                           "and comment lines not counted):\n" + "\n".join(offenders))
