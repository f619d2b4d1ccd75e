#!/usr/bin/env node
// The package's size as a browser downloads it: the minified bundle, gzipped (level 9).
// Fails over the budget, and when the size docs/client.md states is not this one.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { bundle, root } from "./bundle.mjs";

const BUDGET_BYTES = 10 * 1024;
const text = await bundle();
const minified = Buffer.byteLength(text);
const gzipped = gzipSync(text, { level: 9 }).length;
const kb = (n) => (n / 1024).toFixed(1);
console.log(`size: ${minified} B minified, ${gzipped} B min+gz (${kb(gzipped)} KB; budget ${kb(BUDGET_BYTES)} KB)`);
if (gzipped > BUDGET_BYTES) {
  console.error(`over the budget by ${gzipped - BUDGET_BYTES} B`);
  process.exit(1);
}
const docs = join(root, "..", "..", "docs", "client.md");
const stated = /\*\*Size: ([\d.]+) KB min\+gz\*\*/.exec(readFileSync(docs, "utf8"));
if (!stated || stated[1] !== kb(gzipped)) {
  console.error(`docs/client.md states ${stated ? stated[1] + " KB" : "no size"}: make it **Size: ${kb(gzipped)} KB min+gz**`);
  process.exit(1);
}
