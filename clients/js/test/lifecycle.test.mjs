// How the client behaves where an app meets its edges: subscribe/unsubscribe churn (React StrictMode mounts an
// effect twice), long-lived AbortSignals, iterators left early, close(), URLs a WebSocket refuses.
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { Client, ConnectionClosed } from "../dist/esm/index.js";
import { startHub, token, within } from "./hub.mjs";

let hub;
before(async () => {
  hub = await startHub();
});
after(async () => {
  await hub?.stop();
});

test("unsubscribe before the hub confirmed the subscribe, then subscribe again: the new one is live", async () => {
  const client = new Client(hub.url, { WebSocket });
  await client.connect();
  try {
    const first = client.subscribe("strict");
    const unsubscribed = client.subscriptions.get("strict").unsubscribe(); // the effect's cleanup
    const again = client.subscribe("strict"); // the effect again
    assert.equal((await first).closed, true);
    await unsubscribed;
    const sub = await within(again, 5000, "second subscribe");
    assert.equal(sub.closed, false);
    const got = within(sub.next("publication"), 5000, "publication");
    await client.publish("strict", "live");
    assert.equal((await got).data, "live");
  } finally {
    client.close();
  }
});

test("a long-lived AbortSignal keeps no listener once the calls it bounded are done", async () => {
  const controller = new AbortController();
  const { signal } = controller;
  const client = new Client(hub.url, { WebSocket });
  await client.connect({ signal });
  try {
    const sub = await client.subscribe("signal", { signal });
    for (let i = 0; i < 12; i++) await client.publish("signal", i, { signal });
    await client.history("signal", { signal });
    const got = sub.next("publication", signal);
    await client.publish("signal", "last");
    assert.equal((await within(got, 5000, "publication")).data, "last");
    assert.equal(getEventListeners(signal, "abort").length, 0);
    await assert.rejects(sub.next("publication", AbortSignal.abort("gone")), (reason) => reason === "gone");
  } finally {
    client.close();
  }
});

test("an iterator left early stops buffering; each iterator gets every publication from its creation on", async () => {
  const client = new Client(hub.url, { WebSocket });
  await client.connect();
  try {
    const sub = await client.subscribe("iterate");
    const loop = (async () => {
      for await (const message of sub) return message.data; // leaves the loop: return() ends this iterator
    })();
    await client.publish("iterate", 1);
    assert.equal(await within(loop, 5000, "first loop"), 1);
    const seen = within(sub.next("publication"), 5000, "publication 2");
    await client.publish("iterate", 2); // no iterator: not buffered anywhere
    await seen;
    const a = sub[Symbol.asyncIterator]();
    const b = sub[Symbol.asyncIterator]();
    await client.publish("iterate", 3);
    assert.equal((await within(a.next(), 5000, "a")).value.data, 3);
    assert.equal((await within(b.next(), 5000, "b")).value.data, 3);
    await a.return();
    assert.deepEqual(await a.next(), { value: undefined, done: true });
    await sub.unsubscribe();
    assert.deepEqual(await b.next(), { value: undefined, done: true });
  } finally {
    client.close();
  }
});

test("close() reports its disconnect with reconnect: false", async () => {
  const client = new Client(hub.url, { WebSocket });
  await client.connect();
  const disconnected = client.next("disconnected");
  client.close();
  const event = await within(disconnected, 5000, "disconnected");
  assert.equal(event.reconnect, false);
  assert.equal(client.state, "closed");
});

test("a URL the WebSocket refuses to open ends connect() instead of retrying forever", async () => {
  const client = new Client("not a url", { WebSocket });
  const closed = client.next("closed");
  await assert.rejects(within(client.connect(), 5000, "connect"), ConnectionClosed);
  assert.equal(client.state, "closed");
  assert.equal((await closed).code, 4500);
});

test("the typing event's timeout is in milliseconds, like every duration of the SDK", async () => {
  const alice = new Client(hub.url, { WebSocket, token: token({ sub: "alice" }) });
  const bob = new Client(hub.url, { WebSocket, codec: "json", token: token({ sub: "bob" }) });
  await Promise.all([alice.connect(), bob.connect()]);
  try {
    const sub = await alice.subscribe("chat:typing-units");
    await bob.subscribe("chat:typing-units");
    const typing = within(sub.next("typing"), 5000, "typing");
    await bob.typing("chat:typing-units");
    const event = await typing;
    assert.equal(event.user, "bob");
    assert.ok(event.timeout >= 1000, `timeout ${event.timeout} ms`);
  } finally {
    alice.close();
    bob.close();
  }
});
