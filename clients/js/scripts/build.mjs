// Builds dist/esm (ES modules + .d.ts), dist/cjs (CommonJS + .d.ts) and the browser bundles.
// The browser bundles use platform "browser": importing a Node built-in fails the build.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });

const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json")], { stdio: "inherit" });
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.cjs.json")], { stdio: "inherit" });
writeFileSync(join(dist, "cjs", "package.json"), '{"type":"commonjs"}\n');

mkdirSync(join(dist, "browser"), { recursive: true });
const common = {
  entryPoints: [join(root, "src", "index.ts")],
  bundle: true,
  platform: "browser",
  target: "es2020",
  sourcemap: true,
  logLevel: "warning",
};
await build({ ...common, format: "esm", outfile: join(dist, "browser", "realtime.mjs") });
await build({ ...common, format: "iife", globalName: "Realtime", outfile: join(dist, "browser", "realtime.iife.js") });
