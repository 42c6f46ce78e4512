"""A restricted Flux evaluator and an annotated-CSV encoder.

Supports the subset of Flux listed in README.md, with the semantics documented by InfluxData
(docs.influxdata.com/flux/v0/stdlib/universe/...). Anything outside it raises `Unsupported`,
whose message starts with "fake influxdb does not support:".

lexer → parser (AST) → evaluate (expressions) → functions/aggregates (tables) → program (`run`);
annotated_csv encodes the results.
"""

from .annotated_csv import Dialect, encode_csv, format_float, format_rfc3339nano
from .errors import BucketNotFound, FluxError, Unsupported
from .parameters import extern_bindings, params_record
from .parser import parse
from .program import run
from .values import Duration, Record, StoredPoint, Table, Time, parse_rfc3339

__all__ = [
    "BucketNotFound",
    "Dialect",
    "Duration",
    "FluxError",
    "Record",
    "StoredPoint",
    "Table",
    "Time",
    "Unsupported",
    "encode_csv",
    "extern_bindings",
    "format_float",
    "format_rfc3339nano",
    "params_record",
    "parse",
    "parse_rfc3339",
    "run",
]
