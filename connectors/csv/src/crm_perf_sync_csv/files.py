"""Reading CSV files: fingerprints, headers and rows with their line numbers, in bounded memory."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crm_perf_sync.connector_sdk import ConnectorConfigError, RetriableError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class CsvFile:
    """One file as configured: where it is, how it is written, and how reports name it."""

    path: Path
    label: str
    encoding: str
    delimiter: str

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


class CsvReader:
    """Streams one file's records: the header first, then ``(line, cells)`` for every data row.

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
        self._reader = csv.reader(self._text, delimiter=file.delimiter)
        self._line_end = 0
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def _read_header(self) -> list[str]:
        first = self._next()
        if first is None:
            raise ConnectorConfigError(f"{self.file.label} is empty: a header row is needed")
        self._line_end = self._reader.line_num
        return [name.strip() for name in first]

    def _next(self) -> list[str] | None:
        try:
            cells = next(self._reader)
        except StopIteration:
            return None
        except UnicodeDecodeError:
            # fingerprint() decoded these bytes a moment ago: they changed under us.
            raise RetriableError(f"{self.file.label} changed while it was being read") from None
        except csv.Error as exc:
            raise ConnectorConfigError(
                f"{self.file.label}:{self._line_end + 1}: not readable as CSV: {exc}"
            ) from None
        return cells

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """The data rows, each with the line it starts on; rows of only blank cells are skipped."""
        while True:
            start = self._line_end + 1
            cells = self._next()
            if cells is None:
                return
            self._line_end = self._reader.line_num
            # A blank line, or a row of empty cells that spreadsheets leave at the end, holds nothing.
            if any(cell and not cell.isspace() for cell in cells):
                yield start, cells

    def sha256(self) -> str:
        """The hash of the bytes read so far: the whole file once :meth:`rows` is exhausted."""
        return self._hashing.digest.hexdigest()

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
