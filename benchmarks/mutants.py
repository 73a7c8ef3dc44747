"""The mutants of a module: cosmic-ray's operators, minus the places where a change cannot run.

cosmic-ray finds every place each of its operators can change a module (``+`` to ``-``, ``<`` to
``<=``, a number plus one, ``except E`` that never matches, a loop over nothing, ...). Two kinds
of place are dropped before sampling, because a change there is never executed and would only
count as a survivor nobody can kill: annotations in a module with
``from __future__ import annotations`` (they stay strings) and ``if TYPE_CHECKING:`` blocks
(their condition included).
Mutants are sampled per module, every Nth in source order, so a sample is the same from one run
to the next while the module's code is unchanged.
"""

from __future__ import annotations

import ast
import difflib
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cosmic_ray.plugins
from cosmic_ray.ast import ast_nodes, get_ast
from cosmic_ray.mutating import mutate_code

Span = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Mutant:
    module: str  # path relative to the repository root
    operator: str  # cosmic-ray's name, e.g. "core/ReplaceBinaryOperator_Add_Sub"
    occurrence: int  # the operator's n-th place in the module (cosmic-ray's numbering)
    line: int
    column: int

    @property
    def short_operator(self) -> str:
        return self.operator.removeprefix("core/")


@dataclass(frozen=True)
class Change:
    """A mutant made: the whole mutated source, and the first changed line before and after."""

    source: str
    line: int
    before: str
    after: str


def _operators() -> list[tuple[str, Any]]:
    """Every operator that takes no arguments (the two that do need a per-project config)."""
    found = []
    for name in cosmic_ray.plugins.operator_names():
        operator_class = cosmic_ray.plugins.get_operator(name)
        if not operator_class.arguments():
            found.append((name, operator_class()))
    return found


def _char_column(lines: list[str], line: int, byte_offset: int) -> int:
    """``ast`` counts columns in UTF-8 bytes, parso (cosmic-ray) in characters."""
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return len(text.encode()[:byte_offset].decode(errors="ignore"))


def _never_run(source: str) -> list[Span]:
    """Spans of code that never runs: lazy annotations and ``if TYPE_CHECKING:`` bodies."""
    tree = ast.parse(source)
    lines = source.splitlines()
    lazy = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )
    nodes: list[ast.expr | ast.stmt] = []
    for node in ast.walk(tree):
        if lazy and isinstance(node, ast.arg) and node.annotation is not None:
            nodes.append(node.annotation)
        elif lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            nodes.append(node.returns)
        elif lazy and isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
        elif isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            # The condition too: flipped, it only imports for real what annotations name.
            nodes.extend([node.test, *node.body])
    spans = []
    for node in nodes:
        end_line = node.end_lineno or node.lineno
        start = (node.lineno, _char_column(lines, node.lineno, node.col_offset))
        end = (end_line, _char_column(lines, end_line, node.end_col_offset or 0))
        spans.append((start, end))
    return spans


def _inside(position: tuple[int, int], spans: list[Span]) -> bool:
    return any(start <= position < end for start, end in spans)


def enumerate_mutants(root: Path, module: str) -> list[Mutant]:
    """Every mutant of ``module`` that can run, in source order."""
    source = (root / module).read_text(encoding="utf-8")
    tree = get_ast(source)
    skipped = _never_run(source)
    found = []
    for name, operator in _operators():
        positions = (
            start for node in ast_nodes(tree) for start, _end in operator.mutation_positions(node)
        )
        for occurrence, (line, column) in enumerate(positions):
            if not _inside((line, column), skipped):
                found.append(Mutant(module, name, occurrence, line, column))
    found.sort(key=lambda mutant: (mutant.line, mutant.column, mutant.operator, mutant.occurrence))
    return found


def every_nth(mutants: list[Mutant], every: int, offset: int = 0) -> list[Mutant]:
    """Every ``every``-th mutant, starting at ``offset``: the same sample for the same code."""
    return mutants[offset % every :: every]


def make(root: Path, mutant: Mutant) -> Change | None:
    """The mutated module, or None where the change does not make valid Python."""
    original = (root / mutant.module).read_text(encoding="utf-8")
    operator = cosmic_ray.plugins.get_operator(mutant.operator)()
    mutated = mutate_code(original, operator, mutant.occurrence)
    if mutated is None or mutated == original:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. ``is`` with a literal, made by the mutation
            compile(mutated, mutant.module, "exec")
    except SyntaxError:
        return None
    before_lines, after_lines = original.splitlines(), mutated.splitlines()
    matcher = difflib.SequenceMatcher(a=before_lines, b=after_lines, autojunk=False)
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        if tag != "equal":
            before = " / ".join(line.strip() for line in before_lines[a_start:a_end])
            after = " / ".join(line.strip() for line in after_lines[b_start:b_end])
            return Change(mutated, a_start + 1, before, after or "(line removed)")
    return None


@dataclass(frozen=True)
class Known:
    """A mutant judged by hand, named by its lines (line numbers move). ``kind``: "equivalent"
    (no observable difference) or "cuda-only" (it differs only on a CUDA device, where the
    GPU tests kill it; a CPU run cannot judge it)."""

    kind: str
    module: str
    before: str
    after: str
    reason: str


KINDS = {"equivalent": "equivalent", "cuda_only": "cuda-only"}


def load_known(path: Path) -> list[Known]:
    if not path.exists():
        return []
    tables = tomllib.loads(path.read_text(encoding="utf-8"))
    return [
        Known(kind, entry["module"], entry["before"], entry["after"], entry["reason"])
        for table, kind in KINDS.items()
        for entry in tables.get(table, [])
    ]


def known_as(known: list[Known], module: str, change: Change) -> Known | None:
    for entry in known:
        if (entry.module, entry.before, entry.after) == (module, change.before, change.after):
            return entry
    return None
