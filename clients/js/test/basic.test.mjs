import assert from "node:assert/strict";
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

for (const codec of ["msgpack", "json"]) {
  test(`connect, subscribe, publish, receive, close (${codec})`, async () => {
    const client = new Client(hub.url, { WebSocket, codec, token: token({ sub: "alice" }) });
    await client.connect();
    assert.equal(client.state, "connected");
    assert.equal(client.user, "alice");
    assert.ok(client.clientId);
    const sub = await client.subscribe(`chat:basic-${codec}`);
    const got = within(sub.next("publication"), 5000, "publication");
    const sent = await client.publish(`chat:basic-${codec}`, { text: "hi", n: 2 ** 40 });
    const message = await got;
    assert.deepEqual(message.data, { text: "hi", n: 2 ** 40 });
    assert.equal(message.offset, sent.offset);
    assert.equal(message.epoch, sent.epoch);
    assert.equal(message.mid, sent.mid);
    assert.equal(message.sender.user, "alice");
    assert.equal(typeof sent.time, "number");
    client.close();
    assert.equal(client.state, "closed");
    await assert.rejects(client.publish("chat:basic", 1), ConnectionClosed);
  });
}
