// Copies the browser bundle (dist/browser/realtime.iife.js, made by `npm run build`) into the hub's
// demo page directory, realtime/demo/, where it is committed: `pip install` then serves the demo
// (`realtime serve --demo`) without npm. test/demo-bundle.test.mjs fails while the copy is stale.
import { copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bundle = join(root, "dist", "browser", "realtime.iife.js");
const copy = join(root, "..", "..", "realtime", "demo", "realtime.iife.js");
copyFileSync(bundle, copy);
console.log(`copied ${bundle} to ${copy}`);
