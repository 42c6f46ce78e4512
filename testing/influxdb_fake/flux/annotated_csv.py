"""Annotated CSV in the shape Flux's csv.ResultEncoder writes it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .values import Table

# Column types: string, int, uint, float, bool, time.
# Column types: string, int, uint, float, bool, time.
CSV_DATATYPES = {
    "string": "string",
    "int": "long",
    "uint": "unsignedLong",
    "float": "double",
    "bool": "boolean",
    "time": "dateTime:RFC3339",
}


def format_rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: fraction without trailing zeros, omitted when zero."""
    seconds, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        return f"{base}.{f'{frac:09d}'.rstrip('0')}Z"
    return f"{base}Z"


def format_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True)
class Dialect:
    header: bool = True
    delimiter: str = ","
    annotations: tuple[str, ...] = ()


def _csv_field(value: str, delimiter: str) -> str:
    if value == "":
        return value
    needs_quotes = value == "\\." or delimiter in value or any(c in value for c in '"\r\n') or value[0].isspace()
    if not needs_quotes:
        return value
    body = value.replace('"', '""').replace("\r", "").replace("\n", "\r\n")
    return f'"{body}"'


def _encode_value(value: Any, typ: str) -> str:
    if value is None:
        return ""
    if typ == "time":
        return format_rfc3339nano(value)
    if typ == "float":
        return format_float(float(value))
    if typ == "bool":
        return "true" if value else "false"
    return str(value)


def encode_csv(results: list[tuple[str, list[Table]]], dialect: Dialect) -> bytes:
    """Annotated CSV in the shape Flux's csv.ResultEncoder writes (CRLF, one blank line per schema change)."""
    out: list[str] = []
    delim = dialect.delimiter

    def write(cells: list[str] | None) -> None:
        out.append("" if cells is None else delim.join(_csv_field(c, delim) for c in cells))
        out.append("\r\n")

    with_default = "default" in dialect.annotations
    for result_name, tables in results:
        last_cols: list[tuple[str, str]] | None = None
        last_empty = False
        for table_id, table in enumerate(tables):
            cols = [("result", "string"), ("table", "int"), *table.columns]
            empty = not table.rows
            if last_empty or cols != last_cols or empty:
                if last_cols:
                    write(None)
                for annotation in dialect.annotations:
                    if annotation == "datatype":
                        write(["#datatype", *[CSV_DATATYPES[t] for _, t in cols]])
                    elif annotation == "group":
                        write(
                            [
                                "#group",
                                "false",
                                "false",
                                *["true" if c in table.key else "false" for c, _ in table.columns],
                            ]
                        )
                    elif annotation == "default":
                        defaults = [result_name, str(table_id) if empty else ""]
                        for label, typ in table.columns:
                            value = table.key_values.get(label) if empty and label in table.key else None
                            defaults.append(_encode_value(value, typ))
                        write(["#default", *defaults])
                if dialect.header:
                    write(["", *[label for label, _ in cols]])
            for row in table.rows:
                cells = ["", "" if with_default else result_name, str(table_id)]
                cells.extend(_encode_value(row.get(label), typ) for label, typ in table.columns)
                write(cells)
            last_cols, last_empty = cols, empty
        out.append("\r\n")
    return "".join(out).encode()
