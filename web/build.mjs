// Bundles the demo page's script (demo/app.js, with rxjs and src/) into dist/demo.js.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

await build({
  absWorkingDir: dirname(fileURLToPath(import.meta.url)),
  entryPoints: ["demo/app.js"],
  outfile: "dist/demo.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  minify: false,
  sourcemap: true,
  logLevel: "info",
});
