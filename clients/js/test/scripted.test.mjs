// Orderings a real hub cannot be made to produce on demand, played by a scripted peer.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../dist/esm/index.js";
import { within } from "./hub.mjs";

/**
 * A fake WebSocket speaking realtime.v1.json, driven by the test. It is a fake because the orderings below
 * (an `unsub` "recover" push crossing a resubscribe the client already sent) depend on when the hub's engine
 * loses its delivery relative to the client's own commands, which no test can schedule on a real hub; every
 * path a real hub can take on demand is tested against one in the other files.
 */
class ScriptedSocket {
  static last;
  binaryType = "arraybuffer";
  protocol = "realtime.v1.json";
  readyState = 0;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  /** Every command the client sent, in order. */
  sent = [];
  waiters = [];

  constructor() {
    ScriptedSocket.last = this;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data) {
    for (const line of String(data).split("\n")) {
      if (line === "") continue;
      const command = JSON.parse(line);
      this.sent.push(command);
      for (const waiter of this.waiters.splice(0)) waiter();
    }
  }

  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }

  /** The hub's side: one frame holding `messages`. */
  push(...messages) {
    this.onmessage?.({ data: messages.map((m) => JSON.stringify(m)).join("\n") });
  }

  /** The next command named `cmd` not yet taken. */
  async command(cmd, taken = new Set()) {
    for (;;) {
      const found = this.sent.find((c) => c.cmd === cmd && !taken.has(c.id));
      if (found !== undefined) {
        taken.add(found.id);
        return found;
      }
      await within(new Promise((resolve) => this.waiters.push(resolve)), 2000, `a ${cmd} command`);
    }
  }
}

const pub = (offset, data) => ({ push: "pub", channel: "news", data, offset, epoch: "e1" });

async function subscribed() {
  const client = new Client("ws://scripted/ws", { WebSocket: ScriptedSocket, codec: "json", minBackoff: 10 });
  const connecting = client.connect();
  const ws = await within(
    (async () => {
      for (let i = 0; i < 100 && ScriptedSocket.last?.onmessage == null; i++) await new Promise((r) => setTimeout(r, 5));
      return ScriptedSocket.last;
    })(),
    2000,
    "socket",
  );
  const taken = new Set();
  const connect = await ws.command("connect", taken);
  ws.push({ id: connect.id, result: { client: "c1", version: "1", ping: 25, user: "", expires: 0 } });
  await connecting;
  const subscribing = client.subscribe("news");
  const first = await ws.command("subscribe", taken);
  ws.push({ id: first.id, result: { offset: 1, epoch: "e1", recoverable: true, recovered: false } });
  const sub = await subscribing;
  const got = [];
  sub.on("publication", (m) => got.push(m.offset));
  let ended;
  sub.on("unsubscribed", (e) => (ended = e.reason));
  // A gap (offset 3 after 1) makes the client unsubscribe and subscribe again from offset 1.
  ws.push(pub(3, "c"));
  const unsubscribe = await ws.command("unsubscribe", taken);
  const resubscribe = await ws.command("subscribe", taken);
  assert.equal(resubscribe.offset, 1);
  return { client, ws, sub, got, taken, unsubscribe, resubscribe, ended: () => ended };
}

test("an unsub 'recover' crossing a resubscribe in flight sends no second subscribe (its reply is a fresh subscription)", async () => {
  const { client, ws, got, taken, unsubscribe, resubscribe, ended } = await subscribed();
  try {
    // The hub lost the channel's delivery before it read the client's two commands: the push comes first, then
    // the unsubscribe finds nothing (112) and the subscribe makes a new subscription that recovers 2 and 3.
    ws.push(
      { push: "unsub", channel: "news", reason: "recover" },
      { id: unsubscribe.id, error: { code: 112, message: "not subscribed" } },
      { id: resubscribe.id, result: { offset: 3, epoch: "e1", recoverable: true, recovered: true,
        publications: [{ channel: "news", data: "b", offset: 2, epoch: "e1" }, { channel: "news", data: "c", offset: 3, epoch: "e1" }] } },
    );
    ws.push(pub(4, "d"));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ended(), undefined);
    assert.deepEqual(got, [2, 3, 4]);
    assert.equal(ws.sent.filter((c) => c.cmd === "subscribe" && !taken.has(c.id)).length, 0, "no second subscribe");
  } finally {
    client.close();
  }
});

test("a resubscribe the hub's unsub 'recover' caught (112) is sent again, and the subscription lives on", async () => {
  const { client, ws, got, taken, unsubscribe, resubscribe, ended } = await subscribed();
  try {
    // The subscribe was under way when the hub unsubscribed the channel: protocol.md's 112 for a subscribe.
    ws.push(
      { id: unsubscribe.id, result: {} },
      { push: "unsub", channel: "news", reason: "recover" },
      { id: resubscribe.id, error: { code: 112, message: "not subscribed" } },
    );
    const again = await ws.command("subscribe", taken);
    assert.equal(again.offset, 1);
    ws.push({ id: again.id, result: { offset: 3, epoch: "e1", recoverable: true, recovered: true,
      publications: [{ channel: "news", data: "b", offset: 2, epoch: "e1" }, { channel: "news", data: "c", offset: 3, epoch: "e1" }] } });
    ws.push(pub(4, "d"));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ended(), undefined);
    assert.deepEqual(got, [2, 3, 4]);
  } finally {
    client.close();
  }
});
