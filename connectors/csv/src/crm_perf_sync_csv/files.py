"""Reading CSV files: fingerprints, headers and rows with their line numbers, in bounded memory.

The reader also judges each row's structure before any field is mapped: a row with the wrong number
of cells, a row of empty cells between data rows, or a quoted field that is never closed, runs past
``max_row_lines`` lines, or has text after its closing quote comes out as a :class:`BrokenRow`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crm_perf_sync.connector_sdk import ConnectorConfigError, RetriableError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK = 1 << 20
#: How much of a broken row's first line a report keeps.
_MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class CsvFile:
    """One file as configured: where it is, how it is written, and how reports name it."""

    path: Path
    label: str
    encoding: str
    delimiter: str
    max_row_lines: int = 100

    def require(self, what: str) -> None:
        """Raise the configuration error a missing or unreadable file is."""
        if not self.path.is_file():
            where = "is not a file" if self.path.exists() else "does not exist"
            raise ConnectorConfigError(f"{what}: {self.label} {where} (looked at {self.path})")


def fingerprint(file: CsvFile) -> str:
    """The sha256 of the file's bytes, checking on the way that they decode with its encoding.

    Reading the whole file once before any record is yielded means a wrong encoding is reported
    as a configuration error up front, not half-way through a sync.
    """
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder(file.encoding)(errors="strict")
    lines = 1
    try:
        with file.path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line = lines + chunk[: max(exc.start, 0)].count(b"\n")
                    raise ConnectorConfigError(
                        f"{file.label} is not valid {file.encoding} near line {line} ({exc.reason}); "
                        "set the file's encoding (e.g. cp1252, latin-1)"
                    ) from None
                lines += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ConnectorConfigError(
            f"{file.label} ends inside a {file.encoding} character: {exc.reason}"
        ) from None
    except OSError as exc:
        raise ConnectorConfigError(f"{file.label} cannot be read: {exc}") from None
    return digest.hexdigest()


class _HashingReader(io.RawIOBase):
    """Passes a binary file through, hashing every byte read (to notice a file replaced mid-read)."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        size = self._raw.readinto(view)
        self.digest.update(view[:size])
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


@dataclass(frozen=True, slots=True)
class BrokenRow:
    """A row no record can be built from: where it starts, why, and what it holds.

    ``cells`` are the row's cells when only their number is wrong; ``text`` is the row's first
    line as written when its quoting is broken (its cells cannot be told apart).
    """

    line: int
    reason: str
    cells: list[str] | None = None
    text: str | None = None


class _TooManyLines(Exception):
    """The record being parsed has taken more lines than the file allows one row."""


class _Lines:
    """The file's lines as the csv module pulls them, keeping those of the record being parsed.

    Keeping them bounds a row to ``limit`` lines, and lets a row whose quoting is broken be given
    back from its second line on, to be read again as rows of their own: a stray quote then costs
    its own row, not every row up to the next quote in the file.
    """

    __slots__ = ("_pending", "_text", "limit", "taken")

    def __init__(self, text: io.TextIOWrapper, limit: int) -> None:
        self._text = text
        self._pending: deque[str] = deque()
        self.limit = limit
        self.taken: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if len(self.taken) >= self.limit:
            raise _TooManyLines
        line = self._pending.popleft() if self._pending else next(self._text)
        self.taken.append(line)
        return line

    def give_back(self, lines: list[str]) -> None:
        self._pending.extendleft(reversed(lines))


def _quoting_problem(exc: csv.Error, span: int) -> str:
    text = str(exc)
    if text == "unexpected end of data":
        return "a quoted field opened on this line is never closed (a stray quote?)"
    if text.startswith("field larger than field limit"):
        limit = csv.field_size_limit()
        return f"a field longer than {limit:,} characters starts on this line (a stray quote?)"
    if "expected after" in text:
        if span > 1:
            return (
                f"a quoted field opened on this line runs over {span} lines and has text after its "
                "closing quote (a stray quote?)"
            )
        return 'text follows the closing quote of a quoted field (a quote inside a value is written "")'
    return f"not readable as CSV: {text}"


class CsvReader:
    """Streams one file's records: the header first, then every data row with the line it starts on.

    Rows are parsed incrementally by the :mod:`csv` module (quoted newlines, CRLF, a trailing
    empty column), so memory stays flat however large the file is. ``line`` is the line the row
    starts on, counting the header as line 1, as a spreadsheet would.
    """

    def __init__(self, file: CsvFile) -> None:
        self.file = file
        try:
            raw = file.path.open("rb")
        except OSError as exc:
            raise ConnectorConfigError(f"{file.label} cannot be read: {exc}") from None
        self._hashing = _HashingReader(raw)
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._hashing, buffer_size=_CHUNK), encoding=file.encoding, newline=""
        )
        self._lines = _Lines(self._text, file.max_row_lines)
        # strict: a quoted field left open at the end of the file, or text after a closing quote,
        # is an error to report rather than a cell silently holding the rest of the file.
        self._reader = csv.reader(self._lines, delimiter=file.delimiter, strict=True)
        self._next_line = 1
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def _read_header(self) -> list[str]:
        try:
            first = next(self._reader)
        except StopIteration:
            raise ConnectorConfigError(f"{self.file.label} is empty: a header row is needed") from None
        except UnicodeDecodeError:
            raise RetriableError(f"{self.file.label} changed while it was being read") from None
        except (csv.Error, _TooManyLines) as exc:
            reason = (
                _quoting_problem(exc, len(self._lines.taken))
                if isinstance(exc, csv.Error)
                else f"a quoted field runs over more than {self._lines.limit} lines"
            )
            raise ConnectorConfigError(f"{self.file.label}:1: the header is not readable: {reason}") from None
        self._next_line += len(self._lines.taken)
        return [name.strip() for name in first]

    def rows(self) -> Iterator[tuple[int, list[str]] | BrokenRow]:
        """The data rows, each ``(line, cells)`` with the header's number of cells, or a :class:`BrokenRow`.

        A row with more cells than the header is cut to it when the extra cells are empty (a
        trailing delimiter). Rows of only blank cells are reported where data rows follow them,
        and left out at the end of the file, where spreadsheets leave them.
        """
        width = len(self.header)
        lines = self._lines
        blank: list[BrokenRow] = []
        while True:
            start = self._next_line
            lines.taken = []
            item: tuple[int, list[str]] | BrokenRow
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                # fingerprint() decoded these bytes a moment ago: they changed under us.
                raise RetriableError(f"{self.file.label} changed while it was being read") from None
            except csv.Error as exc:
                item = self._broken_quoting(start, _quoting_problem(exc, len(lines.taken)))
            except _TooManyLines:
                item = self._broken_quoting(
                    start,
                    f"a quoted field opened on this line runs over more than {lines.limit} lines "
                    "(a stray quote? or raise max_row_lines)",
                )
            else:
                span = len(lines.taken)
                self._next_line = start + span
                count = len(cells)
                if not any(cell and not cell.isspace() for cell in cells):
                    blank.append(BrokenRow(start, "every cell is empty", cells))
                    continue
                if count == width:
                    item = (start, cells)
                elif count > width and not any(cell.strip() for cell in cells[width:]):
                    del cells[width:]  # trailing delimiters past the header: nothing was cut off
                    item = (start, cells)
                elif span > 1:
                    # Quoted line breaks and the wrong number of cells: most likely a stray quote
                    # that swallowed the lines after it.
                    item = self._broken_quoting(
                        start,
                        f"{count} cells but the header has {width} columns, in a row whose quoted "
                        f"field runs over {span} lines (a stray quote?)",
                    )
                else:
                    hint = (
                        "(an unquoted delimiter or quote?)"
                        if count > width
                        else "(a row cut short, or a line break that is not quoted?)"
                    )
                    counted = "1 cell" if count == 1 else f"{count} cells"
                    item = BrokenRow(start, f"{counted} but the header has {width} columns {hint}", cells)
            if blank:
                yield from blank
                blank = []
            yield item

    def _broken_quoting(self, start: int, reason: str) -> BrokenRow:
        """The row starting at ``start`` as broken; the lines after its first are read again."""
        taken = self._lines.taken
        if len(taken) > 1:
            self._lines.give_back(taken[1:])
            reason += "; the lines after it are read as rows of their own"
        self._next_line = start + 1
        text = taken[0].rstrip("\r\n") if taken else ""
        return BrokenRow(start, reason, text=text[:_MAX_TEXT])

    def sha256(self) -> str:
        """The hash of the bytes read so far: the whole file once :meth:`rows` is exhausted."""
        return self._hashing.digest.hexdigest()

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
