#!/usr/bin/env node
// Builds dist/ (ESM and .d.ts, with tsc) and the console's bundle (esbuild, minified).
// `--check`: build nothing, fail when the committed console bundle is not what the
// sources build now.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { bundle, CONSOLE_BUNDLE, root } from "./bundle.mjs";

const text = await bundle();
const where = relative(process.cwd(), CONSOLE_BUNDLE);
if (process.argv.includes("--check")) {
  let committed = null;
  try {
    committed = readFileSync(CONSOLE_BUNDLE, "utf8");
  } catch {}
  if (committed !== text) {
    console.error(`${where} is not what clients/js builds now: run npm run build and commit it`);
    process.exit(1);
  }
  console.log(`${where} is current`);
} else {
  rmSync(join(root, "dist"), { recursive: true, force: true });
  execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", join(root, "tsconfig.build.json")], { stdio: "inherit" });
  writeFileSync(CONSOLE_BUNDLE, text);
  console.log(`wrote dist/ and ${where}`);
}
