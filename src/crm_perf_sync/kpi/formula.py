"""Derived KPIs' formulas: parsed and checked once (arithmetic only), evaluated without ``eval``.

A formula names KPI ids, ``target.<kpi id>``, numbers, ``+ - * /`` and parentheses. It is parsed
with :mod:`ast` and walked: anything else is refused when the configuration is validated, and
evaluation propagates a missing input (``None``) instead of guessing a value.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from functools import lru_cache

_FORMULA_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.USub,
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Load,
)


def formula_inputs(formula: str) -> tuple[set[str], set[str]]:
    """The KPI ids a formula reads as values and as ``target.<id>``; raises ValueError if unsafe."""
    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"formula is not an arithmetic expression: {exc.msg}") from None
    values: set[str] = set()
    targets: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _FORMULA_NODES):
            raise ValueError(
                f"formula may only use KPI ids, target.<kpi id>, numbers, + - * / and parentheses "
                f"(found {type(node).__name__})"
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            raise ValueError("formula constants must be numbers")
        if isinstance(node, ast.Attribute):
            if not (isinstance(node.value, ast.Name) and node.value.id == "target"):
                raise ValueError("only target.<kpi id> may use a dot in a formula")
            targets.add(node.attr)
        elif isinstance(node, ast.Name) and node.id != "target":
            values.add(node.id)
    if "target" in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} and not targets:
        raise ValueError("write target.<kpi id> for a KPI's target")
    return values, targets


def formula_names(formula: str) -> tuple[list[str], list[str]]:
    """The KPI ids a formula reads as values and as targets, sorted."""
    values, targets = formula_inputs(formula)
    return sorted(values), sorted(targets)


def evaluate(formula: str, env: Mapping[str, float | None]) -> float | None:
    """The value of a validated formula; ``None`` when an input is missing or a divisor is 0."""

    def walk(node: ast.AST) -> float | None:
        match node:
            case ast.Expression(body=body):
                return walk(body)
            case ast.Constant(value=int() | float() as number):
                return float(number)
            case ast.Name(id=name):
                return env.get(name)
            case ast.Attribute(value=ast.Name(id="target"), attr=name):
                return env.get(f"target.{name}")
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                inner = walk(operand)
                return None if inner is None else -inner
            case ast.BinOp(left=left, op=op, right=right):
                a, b = walk(left), walk(right)
                if a is None or b is None:
                    return None
                if isinstance(op, ast.Add):
                    return a + b
                if isinstance(op, ast.Sub):
                    return a - b
                if isinstance(op, ast.Mult):
                    return a * b
                return a / b if b else None
        raise ValueError(f"unsupported formula element {type(node).__name__}")

    return walk(_parsed(formula))


@lru_cache(maxsize=256)
def _parsed(formula: str) -> ast.Expression:
    return ast.parse(formula, mode="eval")
