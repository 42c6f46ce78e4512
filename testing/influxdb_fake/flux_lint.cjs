// Runs Flux scripts through InfluxData's language server (@influxdata/flux-lsp-node) and prints
// the diagnostics it publishes. stdin: JSON array of scripts; stdout: JSON array of diagnostic lists.
"use strict";

const path = require("path");

// The wasm module logs to console.log; keep stdout for the JSON answer.
for (const name of ["log", "info", "debug", "warn"]) {
  console[name] = (...args) => process.stderr.write(args.join(" ") + "\n");
}

const modulesDir = process.env.FLUX_LSP_MODULES || path.join(__dirname, "node", "node_modules");
let Lsp;
try {
  ({ Lsp } = require(path.join(modulesDir, "@influxdata", "flux-lsp-node")));
} catch (err) {
  process.stderr.write(`cannot load @influxdata/flux-lsp-node from ${modulesDir}: ${err.message}\n`);
  process.exit(3);
}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

// One server per script: the server treats open documents as one package and re-publishes
// diagnostics for the others, so scripts would interfere with each other.
async function diagnose(text) {
  const lsp = new Lsp();
  const uri = "file:///query.flux";
  const published = new Promise((resolve) => {
    lsp.onMessage((raw) => {
      const msg = JSON.parse(raw);
      if (msg.method === "textDocument/publishDiagnostics" && msg.params.uri === uri) resolve(msg.params.diagnostics);
    });
  });
  lsp.run().catch((err) => {
    process.stderr.write(`flux-lsp stopped: ${err}\n`);
    process.exit(4);
  });
  const send = (obj) => lsp.send(JSON.stringify({ jsonrpc: "2.0", ...obj }));
  await send({ id: 1, method: "initialize", params: { processId: null, rootUri: null, capabilities: {} } });
  await send({ method: "initialized", params: {} });
  await send({ method: "textDocument/didOpen", params: { textDocument: { uri, languageId: "flux", version: 1, text } } });
  return published;
}

async function main() {
  const scripts = JSON.parse(await readStdin());
  const timeout = setTimeout(() => {
    process.stderr.write("timed out waiting for diagnostics\n");
    process.exit(5);
  }, 20000);
  const answer = [];
  for (const text of scripts) answer.push(await diagnose(text));
  clearTimeout(timeout);
  process.stdout.write(JSON.stringify(answer), () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(2);
});
