// Runs the JS blocks of docs/sdks.md marked <!-- checked --> against a real hub (quickstart namespaces).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import * as sdk from "../dist/esm/index.js";
import { REPO, startHub } from "./hub.mjs";

const doc = readFileSync(join(REPO, "docs", "sdks.md"), "utf8");
const blocks = [...doc.matchAll(/<!-- checked -->\n```js\n([\s\S]*?)```/g)].map((m) => m[1]);
const expected = [["hi true"], ["one 1", "1"], ["true", "refused: 107"]];
const AsyncFunction = (async () => undefined).constructor;
let hub;

before(async () => {
  hub = await startHub();
});
after(async () => {
  await hub?.stop();
});

test("docs/sdks.md has its JS examples", () => assert.equal(blocks.length, expected.length));

blocks.forEach((code, i) => {
  test(`docs/sdks.md JS example ${i + 1} runs against a hub`, async () => {
    const logs = [];
    const console = { log: (...args) => logs.push(args.join(" ")) };
    const run = new AsyncFunction("Client", "ReplyError", "WebSocket", "console", code.replaceAll("ws://localhost:8000/ws", hub.url));
    await run(sdk.Client, sdk.ReplyError, WebSocket, console);
    assert.deepEqual(logs, expected[i]);
  });
});
