// A fault run: two hub nodes on one Redis, SDK subscribers on both (msgpack and json), publishers (the SDK with
// publish ids, and the HTTP API), and real faults while they run (a hub node SIGKILLed and restarted on its port,
// Redis' connections killed, Redis SIGKILLed and restarted with its append-only file, and optionally wiped).
// verify() then checks that every acknowledged publication reached every subscriber exactly once, in order, or
// that the SDK said `unrecovered` because the stream really restarted. Used by fault.test.mjs (short) and
// scripts/fault-run.mjs (long).
import { execFile } from "node:child_process";
import WebSocket from "ws";
import { Client } from "../dist/esm/index.js";
import { startHub, startRedis, token, within } from "./hub.mjs";

const CHANNEL = "chat:fault";
const API_KEY = "quickstart-key";
const FAULTS = ["kill-hub", "client-kill-pubsub", "client-kill-normal", "kill-redis"];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function redisCli(port, ...args) {
  return new Promise((resolve, reject) => {
    execFile("redis-cli", ["-p", String(port), ...args], { timeout: 5000 }, (error, stdout) =>
      error ? reject(error) : resolve(stdout.trim()));
  });
}

/** A subscriber that records what it gets, and reloads (history) when told `unrecovered`. */
async function subscriber(hub, codec, name) {
  const client = new Client(hub.url, { WebSocket, codec, minBackoff: 50, maxBackoff: 300 });
  const rec = { name, codec, client, events: [], reloads: [], disconnects: 0, ended: undefined, lastEpoch: "", waiters: [] };
  client.on("disconnected", () => rec.disconnects++);
  await client.connect();
  const sub = await client.subscribe(CHANNEL);
  rec.sub = sub;
  rec.lastEpoch = sub.epoch;
  sub.on("publication", (m) => {
    rec.events.push({ t: "pub", seq: m.data.seq, epoch: m.epoch, offset: m.offset });
    rec.lastEpoch = m.epoch;
    for (const check of rec.waiters.slice()) check();
  });
  sub.on("unrecovered", () => {
    // The app's reload path: what the hub holds now, from the stream as it stands.
    const epochBefore = rec.lastEpoch;
    rec.events.push({ t: "unrecovered", epochBefore });
    const reload = { epochBefore, epoch: undefined, error: undefined };
    rec.reloads.push(reload);
    reload.done = client.history(CHANNEL, { limit: 100 }).then(
      (page) => {
        reload.epoch = page.epoch;
        reload.seqs = page.publications.map((m) => m.data.seq);
      },
      (error) => { reload.error = error; },
    );
  });
  sub.on("unsubscribed", ({ reason }) => { rec.ended = reason; });
  return rec;
}

/** Resolves once `rec` received every seq in `seqs` (checked on each publication; bounded by `ms`). */
function receivedAll(rec, seqs, ms) {
  return within(new Promise((resolve) => {
    const check = () => {
      const got = new Set([...rec.events.filter((e) => e.t === "pub").map((e) => e.seq), ...rec.reloads.flatMap((r) => r.seqs ?? [])]);
      if (seqs.every((s) => got.has(s))) {
        rec.waiters.splice(rec.waiters.indexOf(check), 1);
        resolve();
      }
    };
    rec.waiters.push(check);
    check();
  }), ms, `${rec.name}: all acknowledged publications`);
}

/**
 * Start the nodes, subscribers and publishers. Options: subscribers (per node and codec), rate (publications per
 * second, shared by the publishers), historySize.
 */
export async function startFaultRun({ subscribers = 1, rate = 40, historySize = 1000, log = () => undefined } = {}) {
  const redis = await startRedis({ persist: true });
  const config = { namespaces: { chat: { history_size: historySize } } };
  const hubs = [await startHub({ redis, config }), await startHub({ redis, config })];
  const run = {
    redis, hubs, subs: [], faults: [], log,
    acked: new Map(), // seq → { epoch, offset, via, attempts }
    unacked: new Set(), attempts: 0, retried: new Set(), publishErrors: 0, errorKinds: new Map(),
    seq: 0, stopping: false, workers: [],
  };
  for (const hub of hubs) {
    for (const codec of ["msgpack", "json"]) {
      for (let i = 0; i < subscribers; i++) run.subs.push(await subscriber(hub, codec, `node${hubs.indexOf(hub)}-${codec}-${i}`));
    }
  }
  // The SDK publisher, signed in (so the SDK itself resends with the same key), on node 0.
  run.publisher = new Client(hubs[0].url, { WebSocket, token: token({ sub: "fault-publisher" }), minBackoff: 50, maxBackoff: 300 });
  await run.publisher.connect();
  // Publishes under way when the publisher's connection drops are sent again by the SDK, with the same key.
  run.inflight = new Set();
  run.publisher.on("disconnected", () => { for (const seq of run.inflight) run.retried.add(seq); });
  run.pause = 1000 / rate;
  startPublishing(run);
  return run;
}

/** Start the publishers (again, after stopPublishing). */
export function startPublishing(run) {
  const { hubs, pause } = run;
  const js = async () => {
    while (!run.stopping) {
      const seq = ++run.seq;
      const key = `js-${seq}`;
      for (let attempt = 1; attempt <= 4; attempt++) {
        run.attempts++;
        if (attempt > 1) run.retried.add(seq);
        run.inflight.add(seq);
        try {
          const sent = await run.publisher.publish(CHANNEL, { seq, via: "js" }, { key });
          run.acked.set(seq, { epoch: sent.epoch, offset: sent.offset, via: "js", attempts: attempt });
          break;
        } catch (error) {
          countError(run, `js: ${error.name} ${error.code ?? ""}`.trim());
          if (attempt === 4) run.unacked.add(seq);
        } finally {
          run.inflight.delete(seq);
        }
      }
      await sleep(pause * 3);
    }
  };
  // The HTTP API publisher, on node 1: resends with the same key after an error or no answer.
  const http = async () => {
    while (!run.stopping) {
      const seq = ++run.seq;
      const key = `http-${seq}`;
      for (let attempt = 1; attempt <= 20; attempt++) {
        run.attempts++;
        if (attempt > 1) run.retried.add(seq);
        try {
          const response = await fetch(`${hubs[1].httpUrl}/api/publish`, {
            method: "POST",
            headers: { Authorization: `apikey ${API_KEY}`, "Content-Type": "application/json" },
            body: JSON.stringify({ channel: CHANNEL, data: { seq, via: "http" }, key }),
            signal: AbortSignal.timeout(5000),
          });
          if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
          const sent = await response.json();
          run.acked.set(seq, { epoch: sent.epoch, offset: sent.offset, via: "http", attempts: attempt });
          break;
        } catch (error) {
          countError(run, `http: ${error.cause?.code ?? error.message.split(":")[0]}`);
          if (attempt === 20) run.unacked.add(seq);
          else await sleep(200);
        }
      }
      await sleep(pause * 3);
    }
  };
  run.workers = [js(), js(), http()];
}

function countError(run, kind) {
  run.publishErrors++;
  run.errorKinds.set(kind, (run.errorKinds.get(kind) ?? 0) + 1);
}

/** Inject fault number `n` (they take turns); resolves when the faulty part runs again. */
export async function injectFault(run, n) {
  const kind = FAULTS[n % FAULTS.length];
  const at = Date.now();
  if (kind === "kill-hub") {
    const hub = run.hubs[Math.floor(n / FAULTS.length) % run.hubs.length];
    await hub.restart(); // SIGKILL, then start again on the same port
  } else if (kind === "client-kill-pubsub") {
    await redisCli(run.redis.port, "CLIENT", "KILL", "TYPE", "pubsub");
  } else if (kind === "client-kill-normal") {
    await redisCli(run.redis.port, "CLIENT", "KILL", "TYPE", "normal");
  } else {
    await run.redis.restart(); // SIGKILL, then start again on the same port with its append-only file
  }
  run.faults.push({ kind, ms: Date.now() - at });
  run.log(`fault ${kind} (${Date.now() - at} ms)`);
  return kind;
}

/** Stop publishing (the publishes under way finish or give up). */
export async function stopPublishing(run) {
  run.stopping = true;
  await Promise.all(run.workers);
  run.stopping = false;
}

/** Wait until every subscriber has every acknowledged publication of `epoch` (bounded by `ms`). */
export async function settle(run, epoch, ms = 20000) {
  const seqs = [...run.acked].filter(([, a]) => a.epoch === epoch).map(([seq]) => seq);
  // A reload's history counts as received (see verify): let those under way finish first.
  await within(Promise.all(run.subs.flatMap((rec) => rec.reloads.map((r) => r.done))), ms, "reloads");
  await Promise.all(run.subs.map((rec) => receivedAll(rec, seqs, ms)));
}

/** Read the channel's whole history (its current epoch) through the SDK: seq → how many times it is stored. */
export async function storedSeqs(run) {
  const stored = new Map();
  let epoch;
  for await (const page of run.publisher.historyPages(CHANNEL, { limit: 100 })) {
    epoch = page.epoch;
    for (const m of page.publications) stored.set(m.data.seq, [...(stored.get(m.data.seq) ?? []), m.offset]);
  }
  return { epoch, stored };
}

/** Problems found in what each subscriber got (empty: all is well), and figures for a summary. */
export function verify(run) {
  const problems = [];
  const figures = [];
  for (const rec of run.subs) {
    const p = (text) => problems.push(`${rec.name}: ${text}`);
    if (rec.ended !== undefined) p(`the subscription ended: ${rec.ended}`);
    const seen = new Map();
    const positions = new Set();
    const lostEpochs = new Set();
    const left = new Set();
    let last; // the previous publication
    let unrecoveredSince = false;
    for (const e of rec.events) {
      if (e.t === "unrecovered") {
        lostEpochs.add(e.epochBefore);
        unrecoveredSince = true;
        continue;
      }
      if (seen.has(e.seq)) p(`seq ${e.seq} twice (offsets ${seen.get(e.seq).offset} and ${e.offset})`);
      seen.set(e.seq, e);
      const position = `${e.epoch}/${e.offset}`;
      if (positions.has(position)) p(`offset ${position} twice`);
      positions.add(position);
      if (last !== undefined && last.epoch === e.epoch && e.offset !== last.offset + 1) {
        p(`offset ${e.offset} after ${last.offset} in epoch ${e.epoch}${unrecoveredSince ? " (unrecovered)" : ""}`);
      }
      if (last !== undefined && last.epoch !== e.epoch) {
        if (left.has(e.epoch)) p(`back to epoch ${e.epoch}`);
        left.add(last.epoch);
        if (!unrecoveredSince) p(`epoch ${last.epoch} → ${e.epoch} without unrecovered`);
      }
      last = e;
      unrecoveredSince = false;
    }
    for (const reload of rec.reloads) {
      if (reload.error) p(`reload failed: ${reload.error}`);
      else if (reload.epoch === reload.epochBefore) p(`unrecovered, but the stream's epoch is still ${reload.epoch}`);
    }
    // After `unrecovered` the app reloads, then carries on from where the stream stands: what the reload got
    // counts as received (the protocol's step 3).
    const reloaded = new Set(rec.reloads.flatMap((r) => r.seqs ?? []));
    let missing = 0;
    let lost = 0;
    let fromReload = 0;
    const missed = [];
    for (const [seq, a] of run.acked) {
      const got = seen.get(seq);
      if (got === undefined) {
        if (reloaded.has(seq)) fromReload++;
        else if (lostEpochs.has(a.epoch)) lost++;
        else {
          missing++;
          if (missed.length < 5) missed.push(`${seq} (${a.epoch}/${a.offset})`);
        }
      } else if (got.epoch !== a.epoch || got.offset !== a.offset) {
        p(`seq ${seq} at ${got.epoch}/${got.offset}, acknowledged at ${a.epoch}/${a.offset}`);
      }
    }
    if (missing > 0) p(`${missing} acknowledged publications missing: ${missed.join(", ")}`);
    figures.push({ name: rec.name, received: seen.size, missing, fromReload, lostWithEpoch: lost, unrecovered: rec.reloads.length, disconnects: rec.disconnects });
  }
  return { problems, figures };
}

/** Check the history of the current epoch: each acknowledged (and retried) publication stored once, where acked. */
export async function verifyStored(run) {
  const problems = [];
  const { epoch, stored } = await storedSeqs(run);
  for (const [seq, offsets] of stored) if (offsets.length > 1) problems.push(`seq ${seq} stored ${offsets.length} times: ${offsets}`);
  let retriedStored = 0;
  for (const [seq, a] of run.acked) {
    if (a.epoch !== epoch) continue;
    const offsets = stored.get(seq);
    if (offsets === undefined) problems.push(`acknowledged seq ${seq} not in history`);
    else if (offsets[0] !== a.offset) problems.push(`seq ${seq} stored at ${offsets[0]}, acknowledged at ${a.offset}`);
    if (run.retried.has(seq) && offsets?.length === 1) retriedStored++;
  }
  return { problems, epoch, stored: stored.size, retriedStored };
}

export async function stopFaultRun(run) {
  run.stopping = true;
  for (const rec of run.subs) rec.client.close();
  run.publisher?.close();
  await Promise.allSettled(run.workers);
  for (const hub of run.hubs) await hub.stop();
  await run.redis.stop();
}

export { CHANNEL, FAULTS };
