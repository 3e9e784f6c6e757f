// Mermaid's own parser over Mermaid files: `node parse.mjs FILE...`.
//
// For each file, one JSON line on stdout: {"file", "ok", "error"} and, when it parsed,
// "labels": every node's id and its label text as Mermaid holds it, with Mermaid's entity
// escapes (`#quot;`, `#35;`) decoded and `<br>` read as a newline. Exit code 1 if any file
// does not parse. Mermaid needs a DOM even to parse: jsdom provides one.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.DOMParser = dom.window.DOMParser;
globalThis.Element = dom.window.Element;

const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict', maxTextSize: 1000000 });

// Mermaid replaces `#name;` and `#123;` by placeholders before parsing, and the renderer
// turns them into HTML entities; these are the ones the workspace writes.
const named = { quot: '"', amp: '&', lt: '<', gt: '>' };
function decode(text) {
  return text
    .replace(/ﬂ°°(\d+)¶ß/g, (_, n) => String.fromCodePoint(Number(n)))
    .replace(/ﬂ°(\w+)¶ß/g, (m, n) => named[n] ?? m)
    .replace(/<br\s*\/?>/g, '\n');
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, 'utf8');
  try {
    await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const labels = {};
    for (const [id, vertex] of diagram.db.getVertices()) {
      labels[id] = decode(vertex.text ?? '');
    }
    console.log(JSON.stringify({ file, ok: true, labels }));
  } catch (e) {
    failed = true;
    console.log(JSON.stringify({ file, ok: false, error: String(e?.message ?? e) }));
  }
}
process.exit(failed ? 1 : 0);
