// The connect proxy and rpc against a real hub and a real app backend (a Node HTTP server here), msgpack and JSON.
import assert from "node:assert/strict";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { AbortError, Client, ReplyError } from "../dist/esm/index.js";
import { startHub, within } from "./hub.mjs";

const BACKEND_SECRET = "backend-secret-for-the-js-tests";
let hub;
let backend;
const requests = [];
const clients = [];

/** What a backend checks (docs/integration.md): the signature over the raw body, under its secret. */
function verified(headers, raw) {
  const timestamp = headers["realtime-timestamp"];
  if (!/^\d+$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
  const expected = createHmac("sha256", BACKEND_SECRET).update(`${timestamp}.`).update(raw).digest();
  return headers["realtime-signature"].split(",").some((entry) => {
    const given = Buffer.from(entry.trim().replace(/^v1=/, ""), "hex");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

function answer(path, body) {
  if (path === "/connect") {
    if (body.data?.session !== "s1") return { error: { code: 1401, message: "no session" } };
    return { result: { user: "alice", info: { name: "Alice" } } };
  }
  if (body.method === "echo") return { result: { data: { method: body.method, data: body.data, user: body.user } } };
  if (body.method === "slow") return new Promise((resolve) => setTimeout(() => resolve({ result: {} }), 300));
  return { error: { code: 1404, message: "no such method" } };
}

before(async () => {
  backend = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks);
      const ok = verified(req.headers, raw);
      const body = JSON.parse(raw.toString());
      requests.push({ path: req.url, body, ok });
      const out = ok ? await answer(req.url, body) : { error: { code: 1403, message: "bad signature" } };
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify(out));
    });
  });
  await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${backend.address().port}`;
  hub = await startHub({
    config: {
      backend: { secrets: [BACKEND_SECRET] },
      proxy: { connect: `${base}/connect`, rpc: `${base}/rpc` },
    },
  });
});
after(async () => {
  for (const c of clients) c.close();
  await hub?.stop();
  backend?.close();
});

for (const codec of ["msgpack", "json"]) {
  test(`connect with app data, then rpc (${codec})`, async () => {
    const client = new Client(hub.url, { WebSocket, codec, data: { session: "s1" } });
    clients.push(client);
    const connected = new Promise((resolve) => client.on("connected", resolve));
    await within(client.connect(), 10000, "connect");
    assert.equal((await connected).user, "alice");
    assert.deepEqual(await client.rpc("echo", { n: [1, 2] }), { method: "echo", data: { n: [1, 2] }, user: "alice" });
    assert.deepEqual(await client.rpc("echo"), { method: "echo", data: null, user: "alice" });
    await assert.rejects(client.rpc("missing", 1), (e) => e instanceof ReplyError && e.code === 1404 && e.message.includes("no such method"));
    const abort = new AbortController();
    const pending = client.rpc("slow", null, { signal: abort.signal });
    abort.abort();
    await assert.rejects(pending, AbortError);
    const calls = requests.filter((r) => r.path === "/rpc");
    assert.ok(calls.length >= 3 && calls.every((r) => r.ok));
    assert.ok(calls.every((r) => r.body.client && r.body.node && r.body.remote === "127.0.0.1"));
    client.close();
  });
}
