#!/usr/bin/env node
// README.md is a symlink to docs/client.md (one copy in the repository), and npm packs no
// symlink: `pack` puts a copy in its place for `npm pack`, `restore` the symlink after.
import { copyFileSync, lstatSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { root } from "./bundle.mjs";

const readme = join(root, "README.md");
const TARGET = "../../docs/client.md";
if (process.argv[2] === "pack") {
  if (lstatSync(readme).isSymbolicLink()) {
    copyFileSync(join(root, TARGET), `${readme}.tmp`);
    rmSync(readme);
    copyFileSync(`${readme}.tmp`, readme);
    rmSync(`${readme}.tmp`);
  }
} else {
  rmSync(readme, { force: true });
  symlinkSync(TARGET, readme);
}
