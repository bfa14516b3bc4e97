// The demo page's copy of the browser bundle (realtime/demo/realtime.iife.js, committed so that a
// pip install serves the demo without npm) is byte for byte the bundle this checkout builds.
// `npm test` builds dist/ first; `npm run build:demo` rebuilds and refreshes the copy.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

test("the demo page's bundle is the one this checkout builds", () => {
  const built = readFileSync(join(root, "dist", "browser", "realtime.iife.js"));
  const copy = readFileSync(join(root, "..", "..", "realtime", "demo", "realtime.iife.js"));
  assert.ok(built.length > 0);
  assert.ok(
    built.equals(copy),
    "realtime/demo/realtime.iife.js is stale: run `npm run build:demo` in clients/js and commit it",
  );
});
