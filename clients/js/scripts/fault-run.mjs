// The long fault run (see "Testing under faults" in README.md): test/fault.test.mjs's run, for longer.
//   node scripts/fault-run.mjs [--duration 60] [--subscribers 2] [--fault-interval 3] [--rate 40] [--wipe]
// duration and fault interval in seconds (at most 1 hour / at least 0.5 s); subscribers per node and codec
// (at most 50). Prints a summary; the exit code is 1 when something was lost, repeated or out of order.
import { parseArgs } from "node:util";
import { injectFault, settle, startFaultRun, startPublishing, stopFaultRun, stopPublishing, verify, verifyStored } from "../test/faults.mjs";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "60" },
    subscribers: { type: "string", default: "2" },
    "fault-interval": { type: "string", default: "3" },
    rate: { type: "string", default: "40" },
    wipe: { type: "boolean", default: false },
  },
});
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, Number(v) || lo));
const duration = clamp(values.duration, 1, 3600) * 1000;
const subscribers = clamp(values.subscribers, 1, 50);
const interval = clamp(values["fault-interval"], 0.5, 3600) * 1000;
const rate = clamp(values.rate, 1, 500);

const started = Date.now();
const log = (text) => console.log(`${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s  ${text}`);
// History holds every publication of the run (the check reads it back whole).
const historySize = Math.max(1000, Math.ceil((rate * duration) / 1000) * 2 + 1000);
const run = await startFaultRun({ subscribers, rate, historySize, log });
log(`2 hub nodes, ${run.subs.length} subscribers (msgpack and json), publishing ~${rate}/s, a fault every ${interval / 1000} s`);
let failed = false;
const report = (what, problems) => {
  for (const p of problems.slice(0, 20)) log(`PROBLEM ${what}: ${p}`);
  if (problems.length > 20) log(`... and ${problems.length - 20} more`);
  failed ||= problems.length > 0;
};
try {
  let n = 0;
  const end = Date.now() + duration;
  while (Date.now() + interval < end && n < 10000) {
    await new Promise((resolve) => setTimeout(resolve, interval));
    await injectFault(run, n++);
  }
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, end - Date.now())));
  await stopPublishing(run);
  const epoch = [...run.acked.values()].at(-1)?.epoch;
  log(`published: ${run.acked.size} acknowledged (${[...run.acked.values()].filter((a) => a.via === "js").length} by the SDK, `
    + `${[...run.acked.values()].filter((a) => a.via === "http").length} by HTTP), ${run.unacked.size} given up, `
    + `${run.retried.size} sent again with the same key, ${run.publishErrors} errors ${JSON.stringify(Object.fromEntries(run.errorKinds))}`);
  try {
    await settle(run, epoch, 30000);
  } catch (error) {
    log(`not settled: ${error.message}`);
  }
  if (values.wipe) {
    log("Redis restarted empty: the stream restarts");
    await run.redis.restart({ wipe: true });
    startPublishing(run);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await stopPublishing(run);
    try {
      await settle(run, [...run.acked.values()].at(-1)?.epoch, 30000);
    } catch (error) {
      log(`not settled: ${error.message}`);
    }
  }
  const { problems, figures } = verify(run);
  report("delivery", problems);
  const stored = await verifyStored(run);
  report("history", stored.problems);
  const kinds = {};
  for (const f of run.faults) kinds[f.kind] = (kinds[f.kind] ?? 0) + 1;
  log(`faults: ${run.faults.length} ${JSON.stringify(kinds)}`);
  const sum = (k) => figures.reduce((s, f) => s + f[k], 0);
  log(`subscribers: ${figures.length}, publications received ${sum("received")}, missing ${sum("missing")}, `
    + `from reloads ${sum("fromReload")}, lost with a restarted stream ${sum("lostWithEpoch")}, unrecovered ${sum("unrecovered")}, `
    + `reconnects ${sum("disconnects")}`);
  log(`history (epoch ${stored.epoch}): ${stored.stored} publications, each once; ${stored.retriedStored} of them sent more than once`);
  log(failed ? "FAILED" : `OK: no publication lost, repeated or out of order (${((Date.now() - started) / 1000).toFixed(0)} s)`);
} finally {
  await stopFaultRun(run);
}
process.exitCode = failed ? 1 : 0;
