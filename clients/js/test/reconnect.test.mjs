// Drops for real: the hub killed and restarted on the same port (memory and Redis engines), frozen, full,
// tokens expiring; and the mobile lifecycle (pause/resume/networkChanged).
import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { Client } from "../dist/esm/index.js";
import { startHub, token, within } from "./hub.mjs";

const fast = { WebSocket, minBackoff: 50, maxBackoff: 300 };

for (const redis of [false, true]) {
  test(`reconnect after the hub restarts, resubscribe with offset+epoch (${redis ? "redis" : "memory"} engine)`, async () => {
    const hub = await startHub({ redis });
    const reader = new Client(hub.url, { ...fast, token: token({ sub: "reader" }) });
    const writer = new Client(hub.url, { ...fast, token: token({ sub: "writer" }) });
    try {
      await reader.connect();
      await writer.connect();
      const sub = await reader.subscribe("chat:recover");
      const received = [];
      sub.on("publication", (m) => received.push(m.data));
      let unrecovered = 0;
      sub.on("unrecovered", () => unrecovered++);
      const first = within(sub.next("publication"), 5000, "publication");
      await writer.publish("chat:recover", "before");
      await first;
      const epoch = sub.epoch;

      await hub.kill();
      const down = within(reader.next("disconnected"), 5000, "disconnected");
      assert.equal((await down).reconnect, true);
      assert.equal(reader.state, "connecting");
      // The writer's publish waits for its reconnect and is sent again with the same key.
      const missed = writer.publish("chat:recover", "while away");
      const resubscribed = within(sub.next("subscribed"), 15000, "resubscribed");
      await hub.restart();
      await within(missed, 10000, "publish after restart");
      const subscribed = await resubscribed;
      if (redis) {
        // The stream survived: the publication sent while the reader was away is recovered.
        assert.deepEqual(subscribed, { recovered: true, recoverable: true });
        assert.equal(sub.epoch, epoch);
        for (let i = 0; i < 50 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(received, ["before", "while away"]);
        assert.equal(unrecovered, 0);
      } else {
        // A memory hub forgot the stream: "you missed data, reload".
        assert.equal(subscribed.recovered, false);
        assert.equal(sub.recovered, false);
        assert.ok(unrecovered >= 1);
      }
      assert.equal(reader.state, "connected");
      // Wait for "after" itself: on a memory hub the writer's retried "while away" may arrive live first.
      const after = within(
        new Promise((resolve) => sub.on("publication", (m) => m.data === "after" && resolve(m))),
        5000,
        "publication after",
      );
      await writer.publish("chat:recover", "after");
      assert.equal((await after).data, "after");
    } finally {
      reader.close();
      writer.close();
      await hub.stop();
    }
  });
}

test("live state: resubscribe with version after a restart (redis engine) brings only what changed", async () => {
  const hub = await startHub({ redis: true });
  const reader = new Client(hub.url, fast);
  const writer = new Client(hub.url, fast);
  try {
    await reader.connect();
    await writer.connect();
    await writer.stateSet("live:board", "a", 1);
    const sub = await reader.subscribe("live:board");
    assert.equal(sub.state.get("a"), 1);
    await hub.kill();
    await within(reader.next("disconnected"), 5000, "disconnected");
    await hub.restart();
    await within(writer.next("connected"), 10000, "writer back");
    const changed = within(sub.next("state"), 10000, "state");
    await writer.stateSet("live:board", "b", 2);
    const change = await changed;
    assert.equal(change.key, "b");
    assert.deepEqual([...sub.state.entries()].sort(), [["a", 1], ["b", 2]]);
  } finally {
    reader.close();
    writer.close();
    await hub.stop();
  }
});

test("the token is refreshed before it expires; getToken gives the first token", async () => {
  const hub = await startHub({ config: { token_grace: 0.5 } });
  let calls = 0;
  const client = new Client(hub.url, {
    ...fast,
    getToken: async () => {
      calls++;
      return token({ sub: "tok", exp: Math.floor(Date.now() / 1000) + 3 });
    },
  });
  try {
    const connected = within(client.next("connected"), 5000, "connected");
    await client.connect();
    assert.ok((await connected).expires > 0);
    assert.equal(calls, 1);
    let drops = 0;
    client.on("disconnected", () => drops++);
    // Past the first token's exp + grace: still the same connection, thanks to refresh commands.
    const first = client.clientId;
    for (let i = 0; i < 100 && calls < 3; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(calls >= 3, `getToken called ${calls} times`);
    assert.equal(await client.ping() >= 0, true);
    assert.equal(client.clientId, first);
    assert.equal(drops, 0);
  } finally {
    client.close();
    await hub.stop();
  }
});

test("pause() leaves no timer running; resume() reconnects and recovers", async () => {
  const hub = await startHub({ redis: false });
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  const baseline = timers();
  const client = new Client(hub.url, { ...fast, token: token({ sub: "phone", exp: Math.floor(Date.now() / 1000) + 3600 }), getToken: async () => token({ sub: "phone" }) });
  const writer = new Client(hub.url, fast);
  try {
    await client.connect();
    await writer.connect();
    const sub = await client.subscribe("news");
    const first = within(sub.next("publication"), 5000, "publication");
    await writer.publish("news", 1);
    await first;
    assert.ok(timers() > baseline); // the alive check and the refresh
    client.pause();
    assert.equal(client.state, "paused");
    const pending = client.history("news"); // waits for resume, with no timer while paused
    await writer.publish("news", 2);
    await new Promise((r) => setImmediate(r));
    // The writer's own timers are not the client's: count them apart by closing the writer first.
    writer.close();
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(timers(), baseline, "no timer left while paused");
    const resubscribed = within(sub.next("subscribed"), 5000, "resubscribed");
    client.resume();
    const page = await within(pending, 5000, "history after resume");
    assert.deepEqual(page.publications.map((p) => p.data), [1, 2]);
    assert.equal(client.state, "connected");
    const again = await resubscribed;
    assert.equal(again.recovered, true);
  } finally {
    client.close();
    writer.close();
    await hub.stop();
  }
});

test("a frozen hub is found dead after 2 × ping with no message; networkChanged() reconnects at once", async () => {
  const hub = await startHub({ config: { ping_interval: 1 } });
  const client = new Client(hub.url, { WebSocket, minBackoff: 60000, maxBackoff: 60000 });
  try {
    await client.connect();
    process.kill(hub.pid, "SIGSTOP");
    let disconnected;
    try {
      disconnected = await within(client.next("disconnected"), 5000, "dead connection found");
    } finally {
      process.kill(hub.pid, "SIGCONT");
    }
    assert.equal(disconnected.reconnect, true);
    assert.equal(client.state, "connecting");
    // The backoff would wait up to a minute; a network change reconnects now.
    client.networkChanged();
    await within(client.next("connected"), 5000, "connected after networkChanged");
  } finally {
    client.close();
    await hub.stop();
  }
});

test("a full hub refuses with 4008 and retry_after; the client comes back after the advice", async () => {
  const hub = await startHub({ config: { max_connections: 1 } });
  const first = new Client(hub.url, fast);
  const second = new Client(hub.url, fast);
  try {
    await first.connect();
    const refused = within(second.next("disconnected"), 5000, "refusal");
    const connecting = second.connect();
    const event = await refused;
    assert.equal(event.code, 4008);
    assert.ok(event.retryAfter >= 1000, `retry_after ${event.retryAfter}`);
    first.close();
    await within(connecting, 10000, "connect after the advice");
  } finally {
    first.close();
    second.close();
    await hub.stop();
  }
});

test("an unsub push with reason recover makes the client resubscribe (redis engine, delivery interrupted)", async () => {
  const hub = await startHub({ redis: true });
  const client = new Client(hub.url, fast);
  try {
    await client.connect();
    const sub = await client.subscribe("live:cut");
    const { execFileSync } = await import("node:child_process");
    const resubscribed = within(sub.next("subscribed"), 10000, "resubscribe after unsub recover");
    // Cut the hub's pub/sub connection to Redis: the engine's delivery is interrupted.
    execFileSync("redis-cli", ["-u", hub.redisUrl, "CLIENT", "KILL", "TYPE", "pubsub"]);
    await resubscribed;
    assert.ok(client.subscriptions.has("live:cut"));
  } finally {
    client.close();
    await hub.stop();
  }
});
