// Runs every code block of README.md marked <!-- checked --> against a real hub: the package import points at
// the build, the example URL at the test hub; React Native's modules are stubs (no React Native runtime here).
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import WebSocket from "ws";
import { startHub, token } from "./hub.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(join(here, "..", "README.md"), "utf8");
const blocks = [...readme.matchAll(/<!-- checked -->\n```js\n([\s\S]*?)```/g)].map((m) => m[1]);
const tmp = join(here, ".readme");
let hub;

before(async () => {
  hub = await startHub();
  mkdirSync(tmp, { recursive: true });
});
after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  delete globalThis.WebSocket;
  await hub?.stop();
});

test("README.md has checked examples", () => assert.equal(blocks.length, 4));

blocks.forEach((code, i) => {
  test(`README example ${i + 1} runs against a hub`, async () => {
    const source = code
      .replaceAll('"@realtime-hub/client"', JSON.stringify(pathToFileURL(join(here, "..", "dist", "esm", "index.js")).href))
      .replaceAll('"react-native"', JSON.stringify(pathToFileURL(join(here, "stubs", "react-native.mjs")).href))
      .replaceAll('"@react-native-community/netinfo"', JSON.stringify(pathToFileURL(join(here, "stubs", "netinfo.mjs")).href))
      .replaceAll("wss://hub.example.com/ws", hub.url)
      .replaceAll('"<a token from your backend>"', JSON.stringify(token({ sub: "reader" })));
    const file = join(tmp, `example${i + 1}.mjs`);
    writeFileSync(file, source);
    globalThis.WebSocket = WebSocket; // what browsers and React Native have
    const logs = [];
    const log = console.log;
    console.log = (...args) => logs.push(args.join(" "));
    try {
      await import(pathToFileURL(file).href);
    } finally {
      console.log = log;
    }
    if (i === 0) assert.match(logs.join("\n"), /stored at offset \d+/);
    if (i === 1) {
      const { AppState } = await import("./stubs/react-native.mjs");
      const { default: NetInfo } = await import("./stubs/netinfo.mjs");
      assert.equal(AppState.listeners + NetInfo.listeners, 0, "the example removes its listeners");
    }
    if (i === 2) assert.deepEqual(logs, ["hello", "refused: 107"]);
    if (i === 3) {
      assert.ok(logs.includes("here: 1"), logs.join("\n"));
      assert.ok(logs.includes("stats: [object Object]") || logs.some((l) => l.startsWith("stats:")));
      assert.ok(logs.some((l) => /^home = .* at \d+$/.test(l)), logs.join("\n"));
      assert.ok(logs.includes("snapshot: [object Object] true"), logs.join("\n"));
      assert.ok(logs.some((l) => /^receipts: \{"reader":\d+\}$/.test(l)), logs.join("\n"));
    }
  });
});
