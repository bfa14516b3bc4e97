// The codecs against docs/protocol.md's worked examples (parsed out of the markdown, so the docs are checked),
// and the integer and map-key rules, with no sockets.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  afterAdvice, applyMergePatch, backoff, jsonCodec, LiveState, msgpackCodec, parseJSON, PrecisionError, toJSON,
} from "../dist/esm/index.js";
import { readMessage, readSubscribe } from "../dist/esm/protocol/messages.js";
import { REPO } from "./hub.mjs";

const doc = readFileSync(join(REPO, "docs", "protocol.md"), "utf8");
const examples = new Map();
for (const m of doc.matchAll(/<!-- example: (\S+) (json|msgpack) -->\n```\w*\n([\s\S]*?)```/g)) {
  const [, name, codec, body] = m;
  const entry = examples.get(name) ?? {};
  entry[codec] = codec === "json" ? body.trim() : Uint8Array.from(body.trim().split(/\s+/).map((h) => parseInt(h, 16)));
  examples.set(name, entry);
}

test("protocol.md has worked examples in both codecs", () => {
  assert.ok(examples.size >= 30, `found ${examples.size}`);
  for (const [name, entry] of examples) assert.ok(entry.json && entry.msgpack, `${name} has both codecs`);
});

for (const [name, { json, msgpack }] of examples) {
  test(`worked example ${name}: both codecs decode to the same message`, () => {
    const [fromJson] = jsonCodec.decode(json);
    const [fromMsgpack] = msgpackCodec.decode(msgpack);
    assert.deepEqual(fromMsgpack, fromJson);
    assert.equal(jsonCodec.decode(json).length, 1);
    if ("cmd" in fromJson) {
      // Commands are what the SDK writes: byte for byte, in both codecs.
      assert.deepEqual(Buffer.from(msgpackCodec.encode([fromJson])).toString("hex"), Buffer.from(msgpack).toString("hex"));
      assert.equal(jsonCodec.encode([fromJson]), json);
    }
  });
}

test("a frame holds several messages in both codecs", () => {
  const messages = [{ id: 1, cmd: "ping" }, { id: 2, cmd: "ping" }];
  assert.deepEqual(msgpackCodec.decode(msgpackCodec.encode(messages)), messages);
  assert.equal(jsonCodec.encode(messages), '{"id":1,"cmd":"ping"}\n{"id":2,"cmd":"ping"}');
  assert.deepEqual(jsonCodec.decode('{"id":1,"cmd":"ping"}\n\n{"id":2,"cmd":"ping"}\n'), messages);
});

test("offsets and versions above MAX_SAFE_INTEGER raise PrecisionError, in both codecs", () => {
  const big = 2n ** 53n + 1n;
  const json = `{"push":"pub","channel":"c","data":1,"offset":${big},"epoch":"e"}`;
  const [fromJson] = jsonCodec.decode(json);
  assert.equal(fromJson.offset, big);
  assert.throws(() => readMessage(fromJson), PrecisionError);
  const bytes = msgpackCodec.encode([{ push: "pub", channel: "c", data: 1, offset: big, epoch: "e" }]);
  const [fromMsgpack] = msgpackCodec.decode(bytes);
  assert.equal(fromMsgpack.offset, big);
  assert.throws(() => readMessage(fromMsgpack), PrecisionError);
  assert.throws(() => readSubscribe({ offset: 1, epoch: "e", version: big }, "c"), PrecisionError);
  // Safe 64-bit values (the hub writes uint64 for times) stay numbers.
  const [safe] = msgpackCodec.decode(msgpackCodec.encode([{ t: 2n ** 40n, offset: 2n ** 53n - 1n }]));
  assert.deepEqual(safe, { t: 2 ** 40, offset: Number.MAX_SAFE_INTEGER });
});

test("integers in data that a number cannot hold decode as bigint, in both codecs", () => {
  const data = { big: 18446744073709551615n, neg: -9223372036854775808n, small: 7, float: 1.5, text: "12345678901234567890" };
  const [m] = msgpackCodec.decode(msgpackCodec.encode([{ data }]));
  assert.deepEqual(m.data, data);
  const [j] = jsonCodec.decode(jsonCodec.encode([{ data }]));
  assert.deepEqual(j.data, data);
  assert.equal(toJSON({ a: 18446744073709551615n }), '{"a":18446744073709551615}');
  assert.deepEqual(parseJSON('{"a":[1,-2.5e3,"x\\"y",true,null,{}]}'), { a: [1, -2500, 'x"y', true, null, {}] });
});

test("non-string map keys become strings as protocol.md's table says; the frame still decodes", () => {
  // {1: "a", true: "b", nil: "c", bin(0x01 0x02): "d", "k": {2: "e"}} as written by a server-side publisher.
  const hex = "85 01 a1 61 c3 a1 62 c0 a1 63 c4 02 01 02 a1 64 a1 6b 81 02 a1 65";
  const [value] = msgpackCodec.decode(Uint8Array.from(hex.split(" ").map((h) => parseInt(h, 16))));
  assert.deepEqual(value, { 1: "a", true: "b", null: "c", "AQI=": "d", k: { 2: "e" } });
  assert.deepEqual(Object.keys(value).sort(), ["1", "AQI=", "k", "null", "true"]);
  // Binary values go to JSON as base64, as the hub does for JSON clients.
  assert.equal(toJSON({ b: Uint8Array.of(1, 2, 3, 4) }), '{"b":"AQIDBA=="}');
});

test("backoff: full jitter within min·2^attempt, capped; refusal advice × (1 + 0.5·random)", () => {
  assert.equal(backoff(0, 500, 20000, () => 1), 500);
  assert.equal(backoff(3, 500, 20000, () => 1), 4000);
  assert.equal(backoff(10, 500, 20000, () => 1), 20000);
  assert.equal(backoff(3, 500, 20000, () => 0), 0);
  assert.equal(afterAdvice(100, 2300, () => 0), 2300);
  assert.equal(afterAdvice(100, 2300, () => 1), 3450);
  assert.equal(afterAdvice(5000, 2300, () => 0), 5000);
  assert.equal(afterAdvice(100, undefined, () => 1), 100);
});

test("merge patch (RFC 7386)", () => {
  assert.deepEqual(applyMergePatch({ a: 1, b: { c: 2, d: 3 } }, { a: null, b: { c: 4 }, e: [1] }), { b: { c: 4, d: 3 }, e: [1] });
  assert.deepEqual(applyMergePatch("x", { a: 1 }), { a: 1 });
  assert.deepEqual(applyMergePatch({ a: 1 }, [2]), [2]);
});

test("live state: patches apply only at version + 1; a gap asks for a resubscribe; snapshots heal it", () => {
  const live = new LiveState();
  live.applySnapshot(4, [{ key: "score", value: { home: 1, away: 0 }, version: 4 }], undefined, false, false);
  assert.deepEqual(live.apply("score", 5, { patch: { away: 1 } }), [{ key: "score", value: { home: 1, away: 1 }, version: 5 }]);
  assert.deepEqual(live.apply("score", 5, { patch: { away: 9 } }), []); // already applied
  assert.equal(live.apply("score", 7, { patch: { away: 3 } }), null); // 6 was missed
  assert.equal(live.version, 5);
  // A full value applies whatever the version; a stale one is ignored.
  assert.deepEqual(live.apply("other", 8, { value: "x" }), [{ key: "other", value: "x", version: 8 }]);
  assert.deepEqual(live.apply("other", 6, { value: "old" }), []);
  // The resubscribe with version 5 brings what changed after it.
  const changes = live.applySnapshot(8, [{ key: "score", value: { home: 2, away: 3 }, version: 7 }, { key: "other", value: "x", version: 8 }], 5, true, false);
  assert.deepEqual(changes, [{ key: "score", value: { home: 2, away: 3 }, version: 7 }]);
  assert.equal(live.version, 8);
  assert.equal(live.keyVersion("score"), 7);
  // A reply below the version asked for (the hub's state was reset) replaces everything.
  const reset = live.applySnapshot(1, [{ key: "n", value: 1, version: 1 }], 8, true, false);
  assert.deepEqual([...live.values.keys()], ["n"]);
  assert.deepEqual(reset.map((c) => c.key).sort(), ["n", "other", "score"]);
  // Deleting a key by value null.
  assert.deepEqual(live.apply("n", 2, { value: null }), [{ key: "n", value: null, version: 2 }]);
  assert.equal(live.values.size, 0);
});
