// Nothing lost, nothing twice, under real faults: two hub nodes on one Redis, SDK subscribers on both (msgpack
// and json), the SDK and the HTTP API publishing with publish ids, while a hub node is SIGKILLed and restarted,
// Redis' pubsub and normal connections are killed, and Redis is SIGKILLed and restarted (with its append-only
// file: the stream survives; then wiped: the stream restarts and `unrecovered` is the right answer).
import assert from "node:assert/strict";
import { test } from "node:test";
import { FAULTS, injectFault, settle, startFaultRun, startPublishing, stopFaultRun, stopPublishing, verify, verifyStored } from "./faults.mjs";

test("every acknowledged publication reaches every subscriber once, in order, across faults", { timeout: 90000 }, async () => {
  const run = await startFaultRun({ subscribers: 1, rate: 40 });
  try {
    // Each fault once (a hub node, Redis' pubsub connections, its normal ones, Redis itself, the other hub
    // node), while publishing.
    for (let n = 0; n <= FAULTS.length; n++) {
      await new Promise((resolve) => setTimeout(resolve, 700));
      await injectFault(run, n);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    await stopPublishing(run);
    assert.deepEqual(run.faults.map((f) => f.kind), [...FAULTS, "kill-hub"]);
    assert.ok(run.acked.size > 20, `only ${run.acked.size} publications acknowledged`);
    const epoch = [...run.acked.values()].at(-1).epoch;
    await settle(run, epoch);

    const delivered = verify(run);
    assert.deepEqual(delivered.problems, []);
    for (const f of delivered.figures) {
      // Redis kept the stream: nothing was lost, so nothing was unrecovered.
      assert.equal(f.missing, 0);
      assert.equal(f.unrecovered, 0, `${f.name} was told unrecovered`);
    }
    for (const rec of run.subs) assert.ok(rec.disconnects >= 1, `${rec.name} never dropped`);
    const stored = await verifyStored(run);
    assert.deepEqual(stored.problems, []);
    assert.equal(stored.epoch, epoch);

    // Redis comes back empty: the stream restarts, every subscriber is told `unrecovered` (its reload sees the
    // new epoch), then gets every publication of the new stream once.
    await run.redis.restart({ wipe: true });
    const before = run.acked.size;
    startPublishing(run);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await stopPublishing(run);
    const newEpoch = [...run.acked.values()].at(-1).epoch;
    assert.notEqual(newEpoch, epoch);
    await settle(run, newEpoch);
    const after = verify(run);
    assert.deepEqual(after.problems, []);
    for (const f of after.figures) assert.ok(f.unrecovered >= 1, `${f.name} was not told unrecovered`);
    assert.ok(run.acked.size > before);
    const storedAfter = await verifyStored(run);
    assert.deepEqual(storedAfter.problems, []);
  } finally {
    await stopFaultRun(run);
  }
});
