// The one minified ESM bundle of the package: what the console serves
// (console/static/console/symphainy-client.js) and what the size budget measures.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const CONSOLE_BUNDLE = join(root, "..", "..", "console", "static", "console", "symphainy-client.js");

export async function bundle() {
  const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const result = await build({
    entryPoints: [join(root, "src", "index.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    // The underscored members are private: shorter names in the bundle.
    mangleProps: /^_[a-z]/,
    minify: true,
    legalComments: "none",
    write: false,
    banner: { js: `// @symphainy/client ${version}, built from clients/js by \`npm run build\`: do not edit (docs/client.md).` },
  });
  return result.outputFiles[0].text;
}
