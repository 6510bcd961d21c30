"""Integer arithmetic over shape symbols, for launch geometry written in contributors' manifests.

Manifests are untrusted, so expressions are parsed with :mod:`ast` and only a whitelist of node
types is accepted: integer literals, symbol names, ``+ - * // %``, unary minus, parentheses and the
calls ``min(a, b, ...)``, ``max(a, b, ...)`` and ``ceil_div(a, b)``. Nothing is ever handed to
``eval``. There is no ``**`` and every intermediate value is bounded, so an expression cannot burn
CPU or memory; text length and node count are bounded too, so parsing cannot either.

``//`` and ``%`` are Python's floor division and modulo (they match C only for non-negative
operands, which is all launch geometry uses).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from evalbot.errors import EvalbotError

MAX_TEXT = 512
MAX_NODES = 256
# Every value, intermediate ones included, must fit a signed 64-bit integer, as it will in C.
LIMIT = 2**63 - 1


class ExprError(EvalbotError):
    """The expression is malformed, uses something not allowed, or cannot be evaluated."""


def _ceil_div(a: int, b: int) -> int:
    if b == 0:
        raise ExprError("ceil_div by zero")
    return -(-a // b)


_FUNCTIONS: dict[str, tuple[Callable[..., int], int, int | None]] = {
    # name: (function, min args, max args)
    "min": (min, 2, None),
    "max": (max, 2, None),
    "ceil_div": (_ceil_div, 2, 2),
}

_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}


@dataclass(frozen=True)
class Expr:
    """A checked expression: evaluate it as often as needed without re-parsing."""

    text: str
    names: frozenset[str]
    _tree: ast.expr

    def evaluate(self, env: Mapping[str, int]) -> int:
        return _eval(self._tree, env)


def parse(source: str | int, symbols: Iterable[str]) -> Expr:
    """Check ``source`` (text or a plain int) and return it compiled; names must be in ``symbols``."""
    if isinstance(source, bool) or not isinstance(source, str | int):
        raise ExprError(f"expected an integer or an expression string, got {source!r}")
    text = str(source).strip()
    if not text:
        raise ExprError("empty expression")
    if len(text) > MAX_TEXT:
        raise ExprError(f"expression longer than {MAX_TEXT} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExprError(f"not a valid expression: {text!r} ({type(exc).__name__})") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExprError(f"expression has more than {MAX_NODES} terms")
    allowed = frozenset(symbols)
    names: set[str] = set()
    for node in nodes:
        _check_node(node, allowed, names)
    return Expr(text, frozenset(names), tree.body)


def evaluate(source: str | int, env: Mapping[str, int]) -> int:
    """Parse against the names in ``env`` and evaluate in one step."""
    return parse(source, env).evaluate(env)


def _check_node(node: ast.AST, allowed: frozenset[str], names: set[str]) -> None:
    if isinstance(node, ast.Expression | ast.Load | ast.USub | ast.UAdd) or type(node) in _BINARY:
        return  # operator tokens; their BinOp / UnaryOp is checked on its own
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise ExprError(f"only integer literals are allowed, got {node.value!r}")
        if abs(node.value) > LIMIT:
            raise ExprError(f"literal {node.value} does not fit in 64 bits")
        return
    if isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            return  # checked as the callee of its Call node
        if node.id not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ExprError(f"unknown symbol {node.id!r} (allowed: {known})")
        names.add(node.id)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed (use + - * // %)")
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ExprError(f"only the functions {', '.join(_FUNCTIONS)} may be called")
        if node.keywords:
            raise ExprError(f"{node.func.id}() takes no keyword arguments")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ExprError(f"{node.func.id}() takes no starred arguments")
        _, low, high = _FUNCTIONS[node.func.id]
        if len(node.args) < low or (high is not None and len(node.args) > high):
            want = f"{low}" if high == low else f"at least {low}"
            raise ExprError(f"{node.func.id}() takes {want} arguments, got {len(node.args)}")
        return
    raise ExprError(f"{type(node).__name__} is not allowed in an expression")


def _bounded(value: int) -> int:
    if abs(value) > LIMIT:
        raise ExprError("value overflows 64 bits")
    return value


def _eval(node: ast.expr, env: Mapping[str, int]) -> int:
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ExprError(f"no value for symbol {node.id!r}")
        return _bounded(int(env[node.id]))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        return _bounded(-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.FloorDiv | ast.Mod) and right == 0:
            raise ExprError("division by zero")
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS[node.func.id][0]
        return _bounded(function(*(_eval(arg, env) for arg in node.args)))
    raise ExprError(f"{type(node).__name__} is not allowed in an expression")  # unreachable after parse
