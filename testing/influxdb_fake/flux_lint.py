"""Check Flux with InfluxData's own language server (npm @influxdata/flux-lsp-node, run by Node).

Install once: ``npm install --prefix testing/influxdb_fake/node @influxdata/flux-lsp-node@0.8.40``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SCRIPT = HERE / "flux_lint.cjs"
MODULES = HERE / "node" / "node_modules"
PACKAGE = "@influxdata/flux-lsp-node@0.8.40"
_SEVERITY = {1: "error", 2: "warning", 3: "information", 4: "hint"}


class FluxLintUnavailable(RuntimeError):
    """Node or the flux-lsp package is missing."""


def available() -> bool:
    return shutil.which("node") is not None and (MODULES / "@influxdata" / "flux-lsp-node").is_dir()


def lint_flux(query: str, declared: Iterable[str] | Mapping[str, Any] = ()) -> list[str]:
    """Error and warning diagnostics for one query, as "line:column: message" (1-based, in `query`).

    Names the query gets from outside (influxdb-client `params=` / extern) are reported as undefined by
    the language server. Pass them in `declared`: a mapping name -> example value declares each with the
    matching Flux type (str, bool, int, float, datetime, timedelta, list), so type errors are still found;
    a plain iterable of names only drops their "undefined identifier" diagnostics.
    """
    return lint_many([query], declared)[0]


def lint_many(queries: Sequence[str], declared: Iterable[str] | Mapping[str, Any] = ()) -> list[list[str]]:
    """Like lint_flux for several queries, with one Node process."""
    if isinstance(declared, Mapping):
        prelude = [f"{name} = {_flux_literal(value)}" for name, value in declared.items()]
        ignored: set[str] = set()
    else:
        prelude, ignored = [], set(declared)
    header = "".join(line + "\n" for line in prelude)
    raw = _run([header + q for q in queries])
    results = []
    for diagnostics in raw:
        messages = []
        for d in diagnostics:
            if d.get("severity", 1) > 2:
                continue
            message = d["message"]
            if any(message == f"undefined identifier {name}" for name in ignored):
                continue
            start = d["range"]["start"]
            line = start["line"] - len(prelude) + 1
            messages.append(f"{line}:{start['character'] + 1}: {message}")
        results.append(messages)
    return results


def _run(scripts: list[str]) -> list[list[dict[str, Any]]]:
    node = shutil.which("node")
    if node is None:
        raise FluxLintUnavailable("node is not installed; flux linting needs Node.js (apt-get install nodejs)")
    modules = Path(os.environ.get("FLUX_LSP_MODULES", MODULES))
    if not (modules / "@influxdata" / "flux-lsp-node").is_dir():
        raise FluxLintUnavailable(
            f"{PACKAGE} is not installed in {modules}; run: npm install --prefix {HERE / 'node'} {PACKAGE}"
        )
    proc = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(scripts).encode(),
        capture_output=True,
        timeout=60,
        env={**os.environ, "FLUX_LSP_MODULES": str(modules)},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"flux_lint.cjs failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(proc.stdout)


def _flux_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value).replace("${", "\\${")
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return f"-{-micros}us" if micros < 0 else f"{micros}us"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flux_literal(v) for v in value) + "]"
    raise TypeError(f"cannot declare a Flux value for {value!r}")
