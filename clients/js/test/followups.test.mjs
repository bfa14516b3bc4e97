// Paths the first tests left out, each against a real hub: "__proto__" data keys, subscription tokens,
// connect answered 109, 4009 advice, 4500, AbortSignal on subscribe, error replies with id 0, batching on the
// wire, and an HTTP 503's Retry-After (Node's ws).
import assert from "node:assert/strict";
import { connect as tcpConnect } from "node:net";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { AbortError, Client, ConnectionClosed, ReplyError } from "../dist/esm/index.js";
import { startHub, token, within } from "./hub.mjs";

const fast = { WebSocket, minBackoff: 50, maxBackoff: 300 };
const now = () => Math.floor(Date.now() / 1000);
let hub;

before(async () => {
  hub = await startHub({ config: { namespaces: { private: { subscribe: "token", publish: "clients", history_size: 10, history_ttl: 60 } } } });
});
after(async () => {
  await hub?.stop();
});

/** A WebSocket (the ws package's) that records every frame the SDK sends. */
function recording() {
  const frames = [];
  class Recording extends WebSocket {
    send(data, ...rest) {
      frames.push(data);
      return super.send(data, ...rest);
    }
  }
  return { Recording, frames };
}

for (const codec of ["msgpack", "json"]) {
  test(`a "__proto__" key in data arrives as an own property, Object.prototype untouched (${codec})`, async () => {
    const writer = new Client(hub.url, { WebSocket, codec: "json" });
    const reader = new Client(hub.url, { WebSocket, codec });
    try {
      await writer.connect();
      await reader.connect();
      const sub = await reader.subscribe(`chat:proto-${codec}`);
      const got = within(sub.next("publication"), 5000, "publication");
      // What any client may publish (JSON.parse keeps "__proto__" as an own key).
      const data = JSON.parse('{"__proto__": {"polluted": true}, "text": "hi", "deep": [{"__proto__": 1}]}');
      await writer.publish(`chat:proto-${codec}`, data);
      const message = await got;
      assert.equal(Object.getPrototypeOf(message.data), Object.prototype);
      assert.ok(Object.prototype.hasOwnProperty.call(message.data, "__proto__"));
      assert.deepEqual(Object.getOwnPropertyDescriptor(message.data, "__proto__").value, { polluted: true });
      assert.equal(message.data.text, "hi");
      assert.ok(Object.prototype.hasOwnProperty.call(message.data.deep[0], "__proto__"));
      assert.equal(Object.getOwnPropertyDescriptor(message.data.deep[0], "__proto__").value, 1);
      assert.equal(message.data.polluted, undefined);
      assert.equal({}.polluted, undefined);
      // The frame was not lost: the next publication arrives too.
      const next = within(sub.next("publication"), 5000, "next publication");
      await writer.publish(`chat:proto-${codec}`, "after");
      assert.equal((await next).data, "after");
    } finally {
      writer.close();
      reader.close();
    }
  });
}

test('a live state patch with a "__proto__" key keeps it an own property', async () => {
  const client = new Client(hub.url, { WebSocket });
  try {
    await client.connect();
    const sub = await client.subscribe("live:proto");
    await client.stateSet("live:proto", "k", { a: 1 });
    for (let i = 0; i < 100 && sub.state.get("k") === undefined; i++) await within(sub.next("state"), 5000, "state");
    const patched = within(sub.next("state"), 5000, "patched");
    await client.statePatch("live:proto", "k", JSON.parse('{"__proto__": {"polluted": true}}'));
    const { value } = await patched;
    assert.equal(Object.getPrototypeOf(value), Object.prototype);
    assert.deepEqual(Object.getOwnPropertyDescriptor(value, "__proto__").value, { polluted: true });
    assert.equal(value.a, 1);
    assert.equal({}.polluted, undefined);
  } finally {
    client.close();
  }
});

test("subscription getToken: called for the subscribe, every resubscribe, and again after 109", async () => {
  const client = new Client(hub.url, { ...fast, token: token({ sub: "tina" }) });
  const channel = "private:tina";
  const asked = [];
  let expiredNext = false;
  const getToken = async (signal) => {
    assert.ok(signal instanceof AbortSignal);
    asked.push(expiredNext ? "expired" : "fresh");
    const exp = expiredNext ? now() - 3600 : now() + 3600;
    expiredNext = false;
    return token({ sub: "tina", channel, exp });
  };
  try {
    await client.connect();
    await assert.rejects(client.subscribe(channel), (e) => e instanceof ReplyError && e.code === 103);
    const sub = await client.subscribe(channel, { getToken });
    assert.deepEqual(asked, ["fresh"]);
    // Reconnect: the resubscribe asks for a fresh token; the first one has expired (109), so it asks again.
    expiredNext = true;
    const resubscribed = within(sub.next("subscribed"), 10000, "resubscribed");
    client.pause();
    client.resume();
    assert.equal((await resubscribed).recoverable, true);
    assert.deepEqual(asked, ["fresh", "expired", "fresh"]);
    assert.equal(sub.closed, false);
    const got = within(sub.next("publication"), 5000, "publication");
    await client.publish(channel, "still here");
    assert.equal((await got).data, "still here");
    // A first subscribe whose token has expired gets one more.
    await sub.unsubscribe();
    expiredNext = true;
    const again = await client.subscribe(channel, { getToken });
    assert.deepEqual(asked.slice(3), ["expired", "fresh"]);
    assert.equal(again.closed, false);
  } finally {
    client.close();
  }
});

test("connect answered 109: getToken is called and the connect sent again", async () => {
  const tokens = [token({ sub: "eve", exp: now() - 3600 }), token({ sub: "eve", exp: now() + 3600 })];
  let calls = 0;
  const client = new Client(hub.url, { ...fast, token: tokens[0], getToken: async () => tokens[Math.min(++calls, 1)] });
  try {
    await within(client.connect(), 10000, "connected");
    assert.equal(calls, 1);
    assert.equal(client.user, "eve");
  } finally {
    client.close();
  }
});

test("4009 TOO_MANY_CONNECTIONS: the disconnect carries the hub's retry_after, and the client waits for it", async () => {
  const limited = await startHub({ config: { max_connections_per_address: 1 } });
  const first = new Client(limited.url, fast);
  const second = new Client(limited.url, fast);
  try {
    await first.connect();
    const refused = within(second.next("disconnected"), 10000, "refused");
    second.connect().catch(() => undefined);
    const event = await refused;
    assert.equal(event.code, 4009);
    assert.equal(event.reconnect, true);
    assert.ok(event.retryAfter >= 1000, `retry_after ${event.retryAfter}`);
    // The advice is honoured: the next attempt is set for no sooner than retry_after (Node's timer shows its delay).
    assert.equal(second.state, "connecting");
    assert.ok(second.reconnectTimer._idleTimeout >= event.retryAfter, `next attempt in ${second.reconnectTimer._idleTimeout} ms`);
    first.close();
    second.networkChanged(); // the network "changed": reconnect at once, advice dropped
    await within(second.connect(), 10000, "second connected");
    assert.equal(second.state, "connected");
  } finally {
    first.close();
    second.close();
    await limited.stop();
  }
});

test("a terminal refusal (4500 BAD_REQUEST) closes the client, no reconnect", async () => {
  const { Recording, frames } = recording();
  // A connect carrying a bad field is refused with 4500: a name that is not a string.
  const client = new Client(hub.url, { WebSocket: Recording, name: 12345 });
  const disconnects = [];
  client.on("disconnected", (e) => disconnects.push(e));
  const closed = within(client.next("closed"), 10000, "closed");
  await assert.rejects(client.connect(), (e) => e instanceof ConnectionClosed && e.code === 4500);
  assert.equal((await closed).code, 4500);
  assert.equal(client.state, "closed");
  assert.equal(frames.length, 1, "one connect, never sent again");
  await assert.rejects(client.publish("news", 1), ConnectionClosed);
});

test("AbortSignal on subscribe: an aborted subscribe rejects with AbortError and leaves nothing behind", async () => {
  const client = new Client(hub.url, fast);
  try {
    await client.connect();
    const done = new AbortController();
    done.abort();
    await assert.rejects(client.subscribe("abort-news", { signal: done.signal }), AbortError);
    assert.equal(client.subscriptions.has("abort-news"), false);
    // Aborted while waiting for a connection (paused): rejected at once, and never subscribed on the hub.
    client.pause();
    const later = new AbortController();
    const pending = client.subscribe("abort-news", { signal: later.signal });
    later.abort();
    await assert.rejects(pending, AbortError);
    client.resume();
    const sub = await client.subscribe("abort-news"); // no 105 ALREADY_SUBSCRIBED
    assert.equal(sub.closed, false);
  } finally {
    client.close();
  }
});

test("an error reply with id 0 (a frame the hub cannot decode) fails that frame's commands, not others", async () => {
  const client = new Client(hub.url, { WebSocket });
  try {
    await client.connect();
    // A lone surrogate is no valid UTF-8: the hub cannot decode the frame and answers BAD_REQUEST with id 0.
    const earlier = client.history("bad-news"); // a frame of its own, sent first
    await new Promise((resolve) => setImmediate(resolve));
    const bad = client.publish("bad-news", "\ud800");
    const rejected = await within(bad.then(() => undefined, (e) => e), 5000, "publish rejected");
    assert.ok(rejected instanceof ReplyError, String(rejected));
    assert.equal(rejected.code, 107);
    assert.ok(Array.isArray((await earlier).publications), "the earlier frame's command is answered");
    // The connection is fine: later commands work.
    const sent = await client.publish("bad-news", "fine");
    assert.ok(sent.offset >= 1);
  } finally {
    client.close();
  }
});

test("more than 100 commands in one tick go out as frames of at most 100", async () => {
  const { Recording, frames } = recording();
  const client = new Client(hub.url, { WebSocket: Recording, codec: "json" });
  try {
    await client.connect();
    const before = frames.length;
    const replies = await Promise.all(Array.from({ length: 250 }, (_, i) => client.history(`burst${i}`, { limit: 1 })));
    assert.equal(replies.length, 250);
    const sent = frames.slice(before).map((f) => String(f).split("\n").length);
    assert.deepEqual(sent.slice(0, 3), [100, 100, 50]);
    assert.ok(sent.every((n) => n <= 100));
  } finally {
    client.close();
  }
});

test("an HTTP 503 refusal's Retry-After (seen through ws) is the reconnect advice", async () => {
  const capped = await startHub({ config: { max_pending_per_address: 1, handshake_timeout: 60 } });
  // One socket that never sends a request holds the address's only pending place.
  const holder = tcpConnect(capped.port, "127.0.0.1");
  await new Promise((resolve, reject) => holder.once("connect", resolve).once("error", reject));
  const client = new Client(capped.url, fast);
  try {
    const seen = [];
    const refused = new Promise((resolve) => {
      client.on("disconnected", (e) => {
        seen.push(e);
        if (e.retryAfter !== undefined) resolve(e);
      });
    });
    client.connect().catch(() => undefined);
    // A refused socket may see a reset instead of the 503 (admission.py): wait for one that read it.
    const event = await within(refused, 15000, "a 503 with Retry-After");
    assert.equal(event.code, 1006);
    assert.equal(event.retryAfter, 1000);
    assert.ok(client.reconnectTimer._idleTimeout >= 1000, `next attempt in ${client.reconnectTimer._idleTimeout} ms`);
    holder.destroy();
    await within(client.connect(), 15000, "connected once the place is free");
  } finally {
    holder.destroy();
    client.close();
    await capped.stop();
  }
});
