"""A strict reader of the GLUE distribution's tab-separated files.

The official files are read with quoting disabled (some sentences contain unbalanced quote characters), so one
physical line is one record. MRPC's header starts with a byte-order mark, which is dropped.
"""

import os


class GlueFormatError(ValueError):
    """A GLUE TSV file that does not have the layout its task expects; the message names file and line."""


def _decode_utf8(path: str) -> str:
    """The text of the file at `path`, which must be UTF-8 (as the GLUE files are), without a byte-order mark."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise GlueFormatError(f"{path}, line {line}: the file is not UTF-8 text (byte 0x{data[error.start]:02x} at "
                              f"offset {error.start}); GLUE files are UTF-8. Re-encode it, e.g. from Latin-1: "
                              f"`iconv -f latin1 -t utf-8 {os.path.basename(path)} > utf8.tsv`") from None


def read_tsv_columns(path: str, columns: list, header: tuple | None = None) -> tuple:
    """Read `columns` (header names) of the TSV file at `path`.

    `header` gives the column names of a file without a header row (CoLA's labelled files); when None the first
    line is the header. Blank lines are skipped. Returns `(values, line_numbers)`: column name -> list of strings,
    and the 1-based line number of every record (for error messages). Raises FileNotFoundError for a missing file
    and GlueFormatError for a file that is not UTF-8, a missing column or a line with the wrong number of fields.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GLUE file not found: {path}")
    lines = _decode_utf8(path).split("\n")
    first_record = 0
    if header is None:
        if not lines or not lines[0].strip():
            raise GlueFormatError(f"{path}, line 1: expected a header row naming the columns {columns}, "
                                  "found an empty line")
        header = tuple(lines[0].rstrip("\r").split("\t"))
        first_record = 1
    missing = [c for c in columns if c not in header]
    if missing:
        where = "line 1 (header)" if first_record else "(headerless layout)"
        raise GlueFormatError(f"{path}, {where}: expected the columns {columns}, missing {missing}; "
                              f"the header has {list(header)}")
    positions = [header.index(c) for c in columns]
    values = {c: [] for c in columns}
    line_numbers = []
    for number, line in enumerate(lines[first_record:], start=first_record + 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise GlueFormatError(f"{path}, line {number}: expected {len(header)} tab-separated fields "
                                  f"({', '.join(header)}), found {len(fields)}")
        for column, position in zip(columns, positions):
            values[column].append(fields[position])
        line_numbers.append(number)
    return values, line_numbers
