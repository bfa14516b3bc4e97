// Every command against a real hub (memory engine), msgpack and JSON.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { AbortError, Client, CommandTimeout, ConnectionClosed, ReplyError } from "../dist/esm/index.js";
import { startHub, token, within } from "./hub.mjs";

let hub;
const clients = [];
before(async () => {
  hub = await startHub({
    config: {
      history_reply_bytes: 4096,
      namespaces: { chat: { typing_interval: 1, presence_grace: 0.1 } },
    },
  });
});
after(async () => {
  for (const c of clients) c.close();
  await hub?.stop();
});

async function connect(user, options = {}) {
  const client = new Client(hub.url, { WebSocket, token: user ? token({ sub: user, info: { name: user } }) : undefined, ...options });
  clients.push(client);
  await within(client.connect(), 10000, "connect");
  return client;
}

for (const codec of ["msgpack", "json"]) {
  test(`chat: history pages, typing, read receipts, presence, join/leave (${codec})`, async () => {
    const room = `chat:room-${codec}`;
    const alice = await connect("alice", { codec });
    const bob = await connect("bob", { codec });
    const subA = await alice.subscribe(room);
    const joined = within(subA.next("join"), 5000, "join");
    const subB = await bob.subscribe(room);
    assert.deepEqual(await joined, { user: "bob", info: { name: "bob" } });

    // 30 publications of ~300 bytes: pages stop at the 4 KiB budget (truncated) and are followed.
    const sent = [];
    for (let i = 0; i < 30; i++) sent.push(alice.publish(room, { i, pad: "x".repeat(300) }));
    const positions = await Promise.all(sent);
    const page = await alice.history(room, { limit: 5 });
    assert.deepEqual(page.publications.map((p) => p.data.i), [25, 26, 27, 28, 29]);
    assert.equal(page.offset, positions[29].offset);
    const seen = [];
    for await (const p of alice.historyPages(room)) {
      assert.ok(p.publications.length > 0);
      seen.unshift(...p.publications.map((m) => m.data.i));
    }
    assert.deepEqual(seen, [...Array(30).keys()]);
    const truncated = await alice.history(room);
    assert.equal(truncated.truncated, true);
    const forward = await alice.history(room, { after: positions[27].offset });
    assert.deepEqual(forward.publications.map((p) => p.data.i), [28, 29]);
    assert.equal(forward.publications[0].sender.user, "alice");
    assert.ok(forward.publications[0].mid);

    // Typing: pushed to the others; a second true within the interval is not sent (no 110 reaches the app).
    const typing = within(subB.next("typing"), 5000, "typing");
    await alice.typing(room);
    const t = await typing;
    assert.equal(t.user, "alice");
    assert.equal(t.typing, true);
    await alice.typing(room); // throttled client-side: resolves without an error
    const stopped = within(subB.next("typing"), 5000, "typing false");
    await alice.typing(room, false);
    assert.equal((await stopped).typing, false);

    // Read receipts.
    const readPush = within(subA.next("read"), 5000, "read");
    assert.equal(await bob.read(room, positions[10].offset), positions[10].offset);
    assert.deepEqual(await readPush, { user: "bob", offset: positions[10].offset });
    assert.deepEqual(await alice.receipts(room), { bob: positions[10].offset });
    await assert.rejects(bob.read(room, positions[5].offset), (e) => e instanceof ReplyError && e.code === 115);

    // Presence.
    const presence = await alice.presence(room);
    assert.deepEqual(Object.values(presence).map((m) => m.user).sort(), ["alice", "bob"]);
    assert.deepEqual(presence[alice.clientId], { user: "alice", info: { name: "alice" } });
    assert.deepEqual(await alice.presenceStats(room), { clients: 2, users: 2 });

    const left = within(subA.next("leave"), 5000, "leave");
    const unsubscribed = within(subB.next("unsubscribed"), 5000, "unsubscribed");
    await subB.unsubscribe();
    assert.deepEqual(await left, { user: "bob" });
    assert.deepEqual(await unsubscribed, { reason: "unsubscribed" });
    assert.ok(!bob.subscriptions.has(room));
  });

  test(`live state: snapshot, set, merge-patch deltas, conditional writes (${codec})`, async () => {
    const channel = `live:match-${codec}`;
    const writer = await connect("", { codec });
    await writer.stateSet(channel, "score", { home: 0, away: 0 });
    const reader = await connect("", { codec });
    const sub = await reader.subscribe(channel);
    assert.deepEqual(sub.state.get("score"), { home: 0, away: 0 });
    const v1 = sub.version;
    const changed = within(sub.next("state"), 5000, "state");
    const v2 = await writer.statePatch(channel, "score", { away: 1 });
    assert.equal(v2, v1 + 1);
    assert.deepEqual(await changed, { key: "score", value: { home: 0, away: 1 }, version: v2 });
    assert.deepEqual(sub.state.get("score"), { home: 0, away: 1 });
    assert.equal(sub.version, v2);
    await assert.rejects(writer.stateSet(channel, "score", 1, { version: v1 }), (e) => e instanceof ReplyError && e.code === 115);
    const deleted = within(sub.next("state"), 5000, "delete");
    await writer.stateSet(channel, "score", null, { version: sub.keyVersion("score") });
    assert.equal((await deleted).value, null);
    assert.equal(sub.state.has("score"), false);
  });
}

test("status: the command and the status channel", async () => {
  const carol = await connect("carol");
  const [me, nobody] = await carol.status("carol", "nobody");
  assert.deepEqual(me, { user: "carol", online: true, lastSeen: 0 });
  assert.equal(nobody.online, false);
  const sub = await carol.subscribe("status:dave");
  assert.equal(sub.status.online, false);
  const online = within(sub.next("status"), 5000, "status");
  await connect("dave");
  const event = await online;
  assert.equal(event.user, "dave");
  assert.equal(event.online, true);
});

test("errors: ReplyError codes, AbortSignal, CommandTimeout, 110 retried after retry_after", async () => {
  const anon = await connect("");
  await assert.rejects(anon.typing("chat:x"), (e) => e instanceof ReplyError && e.code === 103 && !e.temporary);
  await assert.rejects(anon.subscribe("user:#alice"), (e) => e instanceof ReplyError && e.code === 103);
  const controller = new AbortController();
  const publishing = anon.publish("news", 1, { signal: controller.signal });
  controller.abort();
  await assert.rejects(publishing, AbortError);
  await assert.rejects(anon.history("news", { signal: AbortSignal.abort() }), AbortError);
  assert.ok((await anon.ping()) >= 0);

  // A frozen hub answers nothing: CommandTimeout.
  const quick = await connect("", { commandTimeout: 300 });
  process.kill(hub.pid, "SIGSTOP");
  try {
    await assert.rejects(quick.ping(), CommandTimeout);
  } finally {
    process.kill(hub.pid, "SIGCONT");
  }
});

test("a burst over the command budget is sent again after retry_after (110), not failed", async () => {
  const busyHub = await startHub({ config: { command_burst: 40, command_rate: 50 } });
  const client = new Client(busyHub.url, { WebSocket });
  try {
    await client.connect();
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => client.publish("news", i)));
    assert.equal(new Set(results.map((r) => r.offset)).size, 60);
  } finally {
    client.close();
    await busyHub.stop();
  }
});

test("a bad token is terminal: connect() rejects with ConnectionClosed 4501, no reconnect", async () => {
  const client = new Client(hub.url, { WebSocket, token: token({ sub: "eve" }, "wrong-secret") });
  const closed = within(client.next("closed"), 5000, "closed");
  await assert.rejects(client.connect(), (e) => e instanceof ConnectionClosed && e.code === 4501);
  assert.equal((await closed).code, 4501);
  assert.equal(client.state, "closed");
});
