"""Size figures of the code base, for issue notes: the longest functions, the largest modules
(scripts included), and the ``RagPipeline`` class's length and constructor parameters.

    python scripts/code_figures.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FOLDERS = ("rag", "rag_bench", "services", "scripts")


def functions(tree: ast.AST) -> list[tuple[int, str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            found.append((length, node.name, node.lineno))
    return found


def main(root: Path) -> None:
    modules, funcs = [], []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")) if (root / folder).exists() else []:
            text = path.read_text()
            relative = path.relative_to(root)
            modules.append((len(text.splitlines()), str(relative)))
            tree = ast.parse(text)
            funcs += [(n, f"{relative}:{line} {name}") for n, name, line in functions(tree)]
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name == "RagPipeline":
                    init = next(
                        f
                        for f in node.body
                        if isinstance(f, ast.FunctionDef) and f.name == "__init__"
                    )
                    params = len(init.args.args) - 1 + len(init.args.kwonlyargs)
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    print(f"RagPipeline: {length} lines, {params} constructor parameters")
    print("largest modules:", ", ".join(f"{p} {n}" for n, p in sorted(modules)[-3:][::-1]))
    print("longest functions:", ", ".join(f"{p} {n}" for n, p in sorted(funcs)[-3:][::-1]))
    print(f"functions over 60 lines: {sum(n > 60 for n, _ in funcs)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
