"""The SOQL subset the emulator understands, parsed and type-checked the way Salesforce does.

``SELECT f1, f2 | COUNT() FROM Object [WHERE ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
[LIMIT n]`` where the condition is comparisons (``= != <> < <= > >=``, ``[NOT] IN (...)``,
``LIKE``) joined by ``AND`` / ``OR`` / ``NOT`` with parentheses. Literals: quoted strings with
SOQL escapes, numbers, ``true`` / ``false`` / ``null``, date-times (``2024-05-01T10:00:00Z`` or
``+00:00``) and dates.

Like the real server it rejects what a client gets wrong: an unknown field or object, a quoted
date-time (``SystemModstamp > '2024-...'``), an unquoted string, a syntax error — each as a
:class:`SoqlError` with Salesforce's error code, so a connector that builds SOQL sloppily fails
here exactly as it would in production.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]

DATETIME_TYPES = frozenset({"datetime"})
DATE_TYPES = frozenset({"date"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})
BOOLEAN_TYPES = frozenset({"boolean"})
# Everything else (id, reference, string, picklist, email, textarea, ...) compares as text.


class SoqlError(Exception):
    """A query Salesforce would refuse, with the ``errorCode`` it answers with."""

    def __init__(self, message: str, code: str = "MALFORMED_QUERY") -> None:
        super().__init__(message)
        self.code = code


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "in",
        "like",
        "order",
        "by",
        "asc",
        "desc",
        "limit",
        "nulls",
        "first",
        "last",
        "true",
        "false",
        "null",
    }
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SoqlError(f"unexpected token at {text[position : position + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
    return tokens


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            index += 1
            escaped = body[index]
            if escaped in _ESCAPES:
                out.append(_ESCAPES[escaped])
            elif escaped in "_%":  # LIKE escapes keep their backslash for the pattern
                out.append("\\" + escaped)
            else:
                raise SoqlError(f"invalid escape sequence \\{escaped}")
        else:
            out.append(char)
        index += 1
    return "".join(out)


def parse_datetime(text: str) -> datetime:
    """A SOQL date-time literal (or Salesforce's rendered form) as an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise SoqlError(f"date-time {text} has no time zone")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Literal:
    kind: str  # str, num, dt, date, bool, null
    value: Any


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: str
    literal: Literal


@dataclass(frozen=True, slots=True)
class InList:
    field: str
    literals: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Like:
    field: str
    pattern: str


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Node


Node = Compare | InList | Like | And | Or | Not


@dataclass(frozen=True, slots=True)
class Order:
    field: str
    ascending: bool
    nulls_first: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query; field names are as written (resolved against a schema by :func:`bind`)."""

    fields: tuple[str, ...]
    count: bool
    sobject: str
    where: Node | None
    order_by: tuple[Order, ...]
    limit: int | None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.position = 0

    def peek(self, offset: int = 0) -> Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.lower() in words:
            self.position += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            found = self.peek()
            raise SoqlError(f"expecting {word.upper()}, found {found.text if found else 'end of query'!r}")

    def punct(self, char: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == char:
            self.position += 1
            return True
        return False

    def expect_punct(self, char: str) -> None:
        if not self.punct(char):
            found = self.peek()
            raise SoqlError(f"expecting {char!r}, found {found.text if found else 'end of query'!r}")

    def name(self) -> str:
        token = self.peek()
        if token is None or token.kind != "word" or token.text.lower() in _KEYWORDS:
            raise SoqlError(f"expecting a field name, found {token.text if token else 'end of query'!r}")
        self.position += 1
        return token.text

    def query(self) -> Query:
        self.expect_keyword("select")
        count = False
        fields: list[str] = []
        token = self.peek()
        if token is not None and token.text.lower() == "count" and (nxt := self.peek(1)) and nxt.text == "(":
            self.position += 1
            self.expect_punct("(")
            self.expect_punct(")")
            count = True
        else:
            fields.append(self.name())
            while self.punct(","):
                fields.append(self.name())
        self.expect_keyword("from")
        sobject = self.name()
        where = self.condition() if self.keyword("where") else None
        order: list[Order] = []
        if self.keyword("order"):
            self.expect_keyword("by")
            while True:
                field = self.name()
                ascending = not self.keyword("desc")
                if ascending:
                    self.keyword("asc")
                nulls_first = ascending
                if self.keyword("nulls"):
                    nulls_first = self.keyword("first")
                    if not nulls_first:
                        self.expect_keyword("last")
                order.append(Order(field, ascending, nulls_first))
                if not self.punct(","):
                    break
        limit = None
        if self.keyword("limit"):
            token = self.peek()
            if token is None or token.kind != "num" or not token.text.isdigit():
                raise SoqlError("LIMIT takes a whole number")
            self.position += 1
            limit = int(token.text)
        if self.peek() is not None:
            raise SoqlError(f"unexpected token: {self.peek()!r}")
        return Query(tuple(fields), count, sobject, where, tuple(order), limit)

    def condition(self) -> Node:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.negation()]
        while self.keyword("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def negation(self) -> Node:
        if self.keyword("not"):
            return Not(self.negation())
        if self.punct("("):
            node = self.condition()
            self.expect_punct(")")
            return node
        return self.comparison()

    def comparison(self) -> Node:
        field = self.name()
        if self.keyword("like"):
            literal = self.literal()
            if literal.kind != "str":
                raise SoqlError("LIKE needs a quoted pattern")
            return Like(field, literal.value)
        negated = self.keyword("not")
        if self.keyword("in"):
            self.expect_punct("(")
            literals = [self.literal()]
            while self.punct(","):
                literals.append(self.literal())
            self.expect_punct(")")
            return InList(field, tuple(literals), negated)
        if negated:
            raise SoqlError("expecting IN after NOT")
        token = self.peek()
        if token is None or token.kind != "op":
            raise SoqlError(f"expecting a comparison operator after {field}")
        self.position += 1
        op = "!=" if token.text == "<>" else token.text
        return Compare(field, op, self.literal())

    def literal(self) -> Literal:
        token = self.peek()
        if token is None:
            raise SoqlError("expecting a value, found end of query")
        self.position += 1
        if token.kind == "str":
            return Literal("str", _unquote(token.text))
        if token.kind == "num":
            return Literal("num", float(token.text))
        if token.kind == "dt":
            return Literal("dt", parse_datetime(token.text))
        if token.kind == "date":
            return Literal("date", date.fromisoformat(token.text))
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return Literal("bool", token.text.lower() == "true")
        if token.kind == "word" and token.text.lower() == "null":
            return Literal("null", None)
        raise SoqlError(f"unexpected value {token.text!r} (strings must be quoted)", "INVALID_FIELD")


def parse(text: str) -> Query:
    """Parse one SOQL statement; raises :class:`SoqlError` on anything outside the subset."""
    return _Parser(text).query()


# -- binding to a schema ---------------------------------------------------------------------------

Schema = Mapping[str, tuple[str, str]]  # lower-case name -> (canonical name, soap type)


def resolve(schema: Schema, sobject: str, name: str) -> tuple[str, str]:
    """The canonical name and type of field ``name`` (SOQL names are case-insensitive)."""
    found = schema.get(name.lower())
    if found is None:
        raise SoqlError(
            f"No such column '{name}' on entity '{sobject}'. If you are attempting to use a custom field, "
            "be sure to append the '__c' after the custom field name.",
            "INVALID_FIELD",
        )
    return found


def _check_literal(field: str, ftype: str, literal: Literal) -> Any:
    """The literal as a value comparable with the field, or the error Salesforce gives."""
    if literal.kind == "null":
        return None
    if ftype in DATETIME_TYPES:
        if literal.kind != "dt":
            raise SoqlError(
                f"value of filter criterion for field '{field}' must be of type dateTime and should not "
                "be enclosed in quotes",
                "INVALID_FIELD",
            )
        return literal.value
    if ftype in DATE_TYPES:
        if literal.kind != "date":
            raise SoqlError(
                f"value of filter criterion for field '{field}' must be of type date and should not be "
                "enclosed in quotes",
                "INVALID_FIELD",
            )
        return literal.value
    if ftype in NUMBER_TYPES:
        if literal.kind != "num":
            raise SoqlError(
                f"value of filter criterion for field '{field}' must be a number", "INVALID_FIELD"
            )
        return literal.value
    if ftype in BOOLEAN_TYPES:
        if literal.kind != "bool":
            raise SoqlError(
                f"value of filter criterion for field '{field}' must be true or false", "INVALID_FIELD"
            )
        return literal.value
    if literal.kind != "str":
        raise SoqlError(f"value of filter criterion for field '{field}' must be quoted", "INVALID_FIELD")
    return literal.value


def _like(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            out.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compile_condition(schema: Schema, sobject: str, node: Node) -> Predicate:
    """A predicate over rows (canonical field names, typed values) for ``node``."""
    if isinstance(node, Compare):
        name, ftype = resolve(schema, sobject, node.field)
        value = _check_literal(name, ftype, node.literal)
        op = node.op
        if value is None:
            if op == "=":
                return lambda row: row.get(name) is None
            if op == "!=":
                return lambda row: row.get(name) is not None
            raise SoqlError(f"null can only be compared with = or !=, not {op}")
        compare = _OPS[op]

        def compare_row(row: Row) -> bool:
            current = row.get(name)
            return current is not None and compare(current, value)

        return compare_row
    if isinstance(node, InList):
        name, ftype = resolve(schema, sobject, node.field)
        values = frozenset(_check_literal(name, ftype, literal) for literal in node.literals)
        if node.negated:
            return lambda row: row.get(name) not in values
        return lambda row: row.get(name) in values
    if isinstance(node, Like):
        name, _ = resolve(schema, sobject, node.field)
        pattern = _like(node.pattern)
        return lambda row: isinstance(row.get(name), str) and pattern.fullmatch(row[name]) is not None
    if isinstance(node, And):
        parts = [compile_condition(schema, sobject, part) for part in node.parts]
        return lambda row: all(part(row) for part in parts)
    if isinstance(node, Or):
        parts = [compile_condition(schema, sobject, part) for part in node.parts]
        return lambda row: any(part(row) for part in parts)
    inner = compile_condition(schema, sobject, node.part)
    return lambda row: not inner(row)


# -- index ranges ----------------------------------------------------------------------------------

#: ``(value, Id)`` bounds of a range over a sorted ``(field, Id)`` index; ``None`` is unbounded.
Bound = tuple[Any, str] | None
_LOWEST_ID = ""
_HIGHEST_ID = "\uffff"


@dataclass(frozen=True, slots=True)
class Range:
    """What of the condition an ordered ``(field, Id)`` index answers, and what is left over.

    ``low`` is exclusive-after (the first key strictly greater than it is in the range), ``high``
    inclusive: both plain tuple comparisons over the index keys.
    """

    field: str
    low: Bound
    high: Bound
    residual: Node | None


def _conjuncts(node: Node | None) -> list[Node]:
    if node is None:
        return []
    if isinstance(node, And):
        out: list[Node] = []
        for part in node.parts:
            out.extend(_conjuncts(part))
        return out
    return [node]


def _lower_bound(schema: Schema, sobject: str, field: str, node: Node) -> Bound | bool:
    """The exclusive lower key ``node`` sets on ``field``, ``False`` if it sets none."""
    if isinstance(node, Compare) and node.literal.kind == "dt":
        name, _ = resolve(schema, sobject, node.field)
        if name == field and node.op == ">":
            return (node.literal.value, _HIGHEST_ID)
        if name == field and node.op == ">=":
            return (node.literal.value, _LOWEST_ID)
    # The keyset form: (F > t OR (F = t AND Id > i)).
    if isinstance(node, Or) and len(node.parts) == 2:
        first, second = node.parts
        if (
            isinstance(first, Compare)
            and first.op == ">"
            and first.literal.kind == "dt"
            and resolve(schema, sobject, first.field)[0] == field
            and isinstance(second, And)
            and len(second.parts) == 2
        ):
            equal, after = second.parts
            if (
                isinstance(equal, Compare)
                and equal.op == "="
                and equal.literal == first.literal
                and resolve(schema, sobject, equal.field)[0] == field
                and isinstance(after, Compare)
                and after.op == ">"
                and after.literal.kind == "str"
                and resolve(schema, sobject, after.field)[0] == "Id"
            ):
                return (first.literal.value, after.literal.value)
    return False


def _upper_bound(schema: Schema, sobject: str, field: str, node: Node) -> Bound | bool:
    if isinstance(node, Compare) and node.literal.kind == "dt":
        name, _ = resolve(schema, sobject, node.field)
        if name == field and node.op == "<=":
            return (node.literal.value, _HIGHEST_ID)
        if name == field and node.op == "<":
            return (node.literal.value, "")  # strictly below: every key (v, id) > (v, "") is out
    return False


def index_range(schema: Schema, sobject: str, field: str, where: Node | None) -> Range:
    """Split ``where`` into bounds on ``(field, Id)`` and the remaining condition."""
    low: Bound = None
    high: Bound = None
    rest: list[Node] = []
    for node in _conjuncts(where):
        lower = _lower_bound(schema, sobject, field, node)
        if lower is not False and isinstance(lower, tuple):
            low = lower if low is None else max(low, lower)
            continue
        upper = _upper_bound(schema, sobject, field, node)
        if upper is not False and isinstance(upper, tuple):
            # "< v" is exclusive: represent it as the greatest key below (v, "").
            high = upper if high is None else min(high, upper)
            continue
        rest.append(node)
    residual: Node | None = None
    if len(rest) == 1:
        residual = rest[0]
    elif rest:
        residual = And(tuple(rest))
    return Range(field, low, high, residual)
