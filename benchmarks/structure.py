"""Structural figures of the package at a git revision: what issue 13's closing note compares.

    python benchmarks/structure.py [REV ...]     # default: the working tree

For each revision: the largest modules (lines), the classes with the most instance attributes
(distinct ``self.x = ...`` targets in the class body), and the explanation density of the pure
core and the connection layer (docstring and comment lines per 100 code lines). The
``duplicates`` tool's pair count is separate (it reads a checkout, not a revision).
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def files_at(rev: str | None) -> dict[str, str]:
    """``{path: text}`` of every ``telcoflow/**.py`` at ``rev`` (None: the working tree)."""
    if rev is None:
        return {
            str(p.relative_to(ROOT)): p.read_text()
            for p in sorted((ROOT / "telcoflow").rglob("*.py"))
        }
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "telcoflow"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        name: subprocess.run(
            ["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        for name in names
        if name.endswith(".py")
    }


def attributes(tree: ast.Module) -> list[tuple[str, int]]:
    """(class, distinct instance attributes assigned in its methods), for every class."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        names: set[str] = set()
        for sub in ast.walk(node):
            targets: list[ast.expr] = []
            if isinstance(sub, ast.Assign):
                targets = list(sub.targets)
            elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                targets = [sub.target]
            for target in targets:
                for t in ast.walk(target):
                    if (
                        isinstance(t, ast.Attribute)
                        and isinstance(t.value, ast.Name)
                        and t.value.id == "self"
                    ):
                        names.add(t.attr)
        out.append((node.name, len(names)))
    return out


def explanation(text: str) -> tuple[int, int]:
    """(explanation lines: comments and docstrings, code lines) of one module."""
    doc_lines: set[int] = set()
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                first = body[0]
                if isinstance(first.value.value, str) and first.end_lineno is not None:
                    doc_lines.update(range(first.lineno, first.end_lineno + 1))
        elif (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and node.end_lineno is not None
        ):
            doc_lines.update(range(node.lineno, node.end_lineno + 1))  # attribute docs
    comment_lines = {
        tok.start[0]
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = text.splitlines()
    code = sum(
        1
        for i, line in enumerate(lines, 1)
        if line.strip() and i not in doc_lines and not line.strip().startswith("#")
    )
    return len(doc_lines | comment_lines), code


def report(rev: str | None) -> None:
    files = files_at(rev)
    total = sum(t.count("\n") for t in files.values())
    print(f"## {rev or 'working tree'}: {len(files)} modules, {total} lines")
    sizes = sorted(((t.count("\n"), p) for p, t in files.items()), reverse=True)
    print(
        "largest modules:", ", ".join(f"{p.removeprefix('telcoflow/')} {n}" for n, p in sizes[:8])
    )
    classes = sorted(
        ((n, c, p) for p, t in files.items() for c, n in attributes(ast.parse(t))), reverse=True
    )
    print("most attributes:", ", ".join(f"{c} {n}" for n, c, _ in classes[:8]))
    for ring in ("telcoflow/_core/", "telcoflow/_net/"):
        expl = code = 0
        for p, t in files.items():
            if p.startswith(ring):
                e, c = explanation(t)
                expl, code = expl + e, code + c
        per_100 = 100 * expl / max(code, 1)
        print(f"{ring}: {code} code lines, {expl} explanation lines ({per_100:.0f} per 100)")


def main() -> None:
    for rev in sys.argv[1:] or [None]:
        report(rev)


if __name__ == "__main__":
    main()
