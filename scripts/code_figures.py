"""Figures of the code base, for issue notes, from the source alone (``ast``; nothing imported):

- sizes: modules over 400 lines and functions over 60 (scripts and tests included), and the
  largest and longest of each;
- which modules of ``rag``, ``services`` and ``rag_bench`` import ``redis``;
- import cycles among the modules of ``rag`` and ``services``: strongly connected components of
  the import graph, first of the imports that run (at import time or inside functions), then with
  the ``if TYPE_CHECKING:`` imports too;
- the length and constructor parameters of the main classes found in ``rag``;
- test functions per tier (``def test*`` at module level or in ``Test*`` classes; parametrized
  tests count once);
- with ``--timed``, the wall time of ``make test-unit`` and ``make test`` (set ``VENV`` in the
  environment to use another virtualenv than the checkout's ``.venv``); nothing is timed when
  ``make install`` is not up to date, since both targets would install first.

    python scripts/code_figures.py [ROOT] [--timed]
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MAIN_CLASSES = (
    "RagPipeline",
    "RetrievalStage",
    "AnswerStage",
    "CachedLayer",
    "CachedStage",
    "AnswerLayer",
    "CachedRetrieval",
    "SemanticCache",
    "RedisGateway",
    "RedisStore",
)
SIZE_FOLDERS = ("rag", "rag_bench", "services", "scripts", "tests")
REDIS_FOLDERS = ("rag", "services", "rag_bench")
GRAPH_FOLDERS = ("rag", "services")
TEST_TIERS = ("unit", "integration", "e2e")
MODULE_BAR, FUNCTION_BAR = 400, 60  # lines

RUNTIME, DEFERRED, TYPING = "import time", "in a function", "TYPE_CHECKING"


@dataclass(frozen=True)
class Module:
    name: str  # dotted: rag.cache.store, rag (for rag/__init__.py), scripts.load
    path: Path  # from the checkout's root
    tree: ast.Module
    lines: int

    @property
    def package(self) -> str:
        """What a relative import in this module is relative to."""
        is_package = self.path.name == "__init__.py"
        return self.name if is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Function:
    qualname: str
    where: str  # path:line
    lines: int


def load_modules(root: Path, folders: tuple[str, ...]) -> list[Module]:
    modules = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                continue
            text = path.read_text()
            parts = relative.with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.append(Module(name, relative, ast.parse(text), len(text.splitlines())))
    return modules


def _length(node: ast.stmt) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def functions(node: ast.AST, path: Path, prefix: str = "") -> Iterator[Function]:
    """Every function and method under ``node``, named as Python's ``__qualname__`` would."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            yield Function(name, f"{path}:{child.lineno}", _length(child))
            yield from functions(child, path, f"{name}.<locals>.")
        elif isinstance(child, ast.ClassDef):
            yield from functions(child, path, f"{prefix}{child.name}.")
        else:
            yield from functions(child, path, prefix)


def print_sizes(modules: list[Module]) -> None:
    funcs = [f for m in modules for f in functions(m.tree, m.path)]
    big = sorted((m for m in modules if m.lines > MODULE_BAR), key=lambda m: -m.lines)
    long = sorted((f for f in funcs if f.lines > FUNCTION_BAR), key=lambda f: -f.lines)
    print(f"== sizes ({', '.join(SIZE_FOLDERS)}): {len(modules)} modules, {len(funcs)} functions")
    largest = sorted(modules, key=lambda m: -m.lines)[:3]
    print("largest modules:", ", ".join(f"{m.path} {m.lines}" for m in largest))
    longest = sorted(funcs, key=lambda f: -f.lines)[:3]
    print("longest functions:", ", ".join(f"{f.where} {f.qualname} {f.lines}" for f in longest))
    print(f"modules over {MODULE_BAR} lines: {len(big)}")
    for m in big:
        print(f"  {m.path} {m.lines}")
    print(f"functions over {FUNCTION_BAR} lines: {len(long)}")
    for f in long:
        print(f"  {f.where} {f.qualname} {f.lines}")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


Import = ast.Import | ast.ImportFrom


def imports(nodes: Iterable[ast.AST], kind: str = RUNTIME) -> Iterator[tuple[Import, str]]:
    """Every import statement in ``nodes`` with how it runs: at import time, inside a function,
    or only for type checkers (the body of ``if TYPE_CHECKING:``)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from imports(node.body, TYPING)
            yield from imports(node.orelse, kind)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from imports(ast.iter_child_nodes(node), TYPING if kind == TYPING else DEFERRED)
        else:
            yield from imports(ast.iter_child_nodes(node), kind)


def _from(module: Module, statement: ast.ImportFrom) -> str:
    """The module a ``from ... import`` reads from, made absolute."""
    if not statement.level:
        return statement.module or ""
    package = module.package.split(".")
    parent = package[: len(package) - statement.level + 1]
    return ".".join([*parent, *([statement.module] if statement.module else [])])


def imported_modules(module: Module, statement: Import, known: set[str]) -> set[str]:
    """The modules among ``known`` that a statement imports: ``import a.b`` gives ``a.b``;
    ``from a import b`` gives ``a.b`` when that is a module, else ``a`` (as grimp and
    import-linter count). A name not in ``known`` counts as its closest known parent."""
    if isinstance(statement, ast.Import):
        names = [alias.name for alias in statement.names]
    else:
        base = _from(module, statement)
        names = [
            f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in statement.names
        ]
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module.name:
            found.add(name)
    return found


def print_redis_imports(modules: list[Module]) -> None:
    print(f"\n== modules of {', '.join(REDIS_FOLDERS)} that import redis")
    found = 0
    for m in modules:
        names = set()
        for statement, kind in imports(m.tree.body):
            if isinstance(statement, ast.Import):
                tops = [alias.name for alias in statement.names]
            else:
                tops = [] if statement.level else [statement.module or ""]
            for name in tops:
                if name == "redis" or name.startswith("redis."):
                    names.add(name if kind == RUNTIME else f"{name} ({kind})")
        if names:
            found += 1
            print(f"  {m.name}: {', '.join(sorted(names))}")
    print(f"  {found} of {len(modules)} modules")


Edges = dict[str, dict[str, str]]  # module -> module it imports -> the kind of import


def import_graph(modules: list[Module]) -> Edges:
    """Which module imports which, among ``modules`` (see ``imported_modules``); when a pair
    has imports of several kinds, the one that runs earliest counts."""
    known = {m.name for m in modules}
    rank = {RUNTIME: 0, DEFERRED: 1, TYPING: 2}
    edges: Edges = defaultdict(dict)
    for m in modules:
        for statement, kind in imports(m.tree.body):
            for name in imported_modules(m, statement, known):
                old = edges[m.name].get(name)
                if old is None or rank[kind] < rank[old]:
                    edges[m.name][name] = kind
    return edges


def strongly_connected(nodes: list[str], edges: Edges, kinds: set[str]) -> list[list[str]]:
    """Tarjan's algorithm over the edges of ``kinds``; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, kind in edges.get(v, {}).items():
            if kind not in kinds:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(found)


def print_cycles(modules: list[Module]) -> None:
    edges = import_graph(modules)
    nodes = sorted(m.name for m in modules)
    count = sum(len(e) for e in edges.values())
    print(f"\n== import cycles among {len(nodes)} modules of {', '.join(GRAPH_FOLDERS)}")
    print(f"  ({count} edges; strongly connected components of more than one module)")
    for title, kinds in (
        ("imports that run (import time, in functions)", {RUNTIME, DEFERRED}),
        ("with TYPE_CHECKING imports too", {RUNTIME, DEFERRED, TYPING}),
    ):
        components = strongly_connected(nodes, edges, kinds)
        print(f"{title}: {len(components) or 'none'}")
        for component in components:
            print(f"  {', '.join(component)}")
            for a in component:
                for b, kind in sorted(edges[a].items()):
                    if b in component and kind in kinds:
                        print(f"    {a} -> {b}" + ("" if kind == RUNTIME else f" ({kind})"))


def _dataclass_fields(node: ast.ClassDef) -> int | None:
    """The ``__init__`` parameters a ``@dataclass`` makes, or None for other classes."""
    names = [ast.unparse(d).split("(")[0] for d in node.decorator_list]
    if not any(n.endswith("dataclass") for n in names):
        return None
    fields = [s for s in node.body if isinstance(s, ast.AnnAssign)]
    return sum(
        "ClassVar" not in ast.unparse(s.annotation)
        and not (s.value is not None and "init=False" in ast.unparse(s.value))
        for s in fields
    )


def constructor(node: ast.ClassDef) -> str:
    init = next(
        (f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None
    )
    if init is None:
        fields = _dataclass_fields(node)
        if fields is not None:
            return f"{fields} constructor parameters (dataclass fields)"
        bases = ", ".join(ast.unparse(b) for b in node.bases) or "object"
        return f"no __init__ of its own (bases: {bases})"
    a = init.args
    positional = len(a.posonlyargs) + len(a.args) - 1  # self
    extra = [f"*{a.vararg.arg}"] if a.vararg else []
    extra += [f"**{a.kwarg.arg}"] if a.kwarg else []
    shape = f" ({len(a.kwonlyargs)} keyword-only)" if a.kwonlyargs else ""
    more = f", and {' '.join(extra)}" if extra else ""
    return f"{positional + len(a.kwonlyargs)} constructor parameters{shape}{more}"


def print_classes(modules: list[Module]) -> None:
    print(f"\n== main classes in rag ({len(MAIN_CLASSES)} names looked for)")
    seen = set()
    for m in modules:
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ClassDef) and node.name in MAIN_CLASSES:
                seen.add(node.name)
                where = f"{m.path}:{node.lineno}"
                print(f"  {node.name} ({where}): {_length(node)} lines, {constructor(node)}")
    missing = [name for name in MAIN_CLASSES if name not in seen]
    print(f"  not found: {', '.join(missing) or 'none'}")


def _is_parametrized(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("parametrize" in ast.unparse(d) for d in node.decorator_list)


def test_functions(body: list[ast.stmt]) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """What pytest collects by default: ``test*`` functions at module level and in ``Test*``
    classes."""
    for node in body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield from test_functions(node.body)
    tests = (n for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    yield from (n for n in tests if n.name.startswith("test"))


def print_tests(root: Path) -> None:
    print("\n== test functions (an ast count: parametrized tests are not expanded)")
    total = 0
    for tier in TEST_TIERS:
        files = sorted((root / "tests" / tier).glob("**/test_*.py"))
        tests = [t for f in files for t in test_functions(ast.parse(f.read_text()).body)]
        parametrized = sum(_is_parametrized(t) for t in tests)
        total += len(tests)
        print(f"  tests/{tier}: {len(tests)} in {len(files)} files ({parametrized} parametrized)")
    print(f"  all tiers: {total}")


def print_timings(root: Path) -> None:
    print("\n== wall time of the test targets")
    if subprocess.run(["make", "-q", "-C", str(root), "install"], capture_output=True).returncode:
        # both targets depend on ``install``: timing them would (re)build a virtualenv first
        print("  not timed: `make install` is not up to date there (set VENV, or run it first)")
        return
    for target in ("test-unit", "test"):
        started = time.perf_counter()
        done = subprocess.run(["make", "-C", str(root), target], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        last = lines[-1] if lines else done.stderr.strip()[-200:]
        print(f"  make {target}: {seconds:.1f} s, exit {done.returncode}: {last}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", nargs="?", type=Path, default=Path("."), help="a checkout")
    parser.add_argument("--timed", action="store_true", help="also time make test-unit, test")
    args = parser.parse_args()
    root = args.root.resolve()
    print(f"code figures of {root}")
    print_sizes(load_modules(root, SIZE_FOLDERS))
    print_redis_imports(load_modules(root, REDIS_FOLDERS))
    print_cycles(load_modules(root, GRAPH_FOLDERS))
    print_classes(load_modules(root, ("rag",)))
    print_tests(root)
    if args.timed:
        print_timings(root)


if __name__ == "__main__":
    main()
