// Starts a real hub from this checkout (and, with redis: true, its own redis-server) for the tests.
// Node built-ins only.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const SECRET = "quickstart-demo-secret-for-trying-the-hub-only";
const PYTHON = process.env.REALTIME_PYTHON ?? "python3";

/** quickstart.toml's settings, as an object (the tests' base config). */
export const QUICKSTART = {
  host: "127.0.0.1",
  allow_anonymous: true,
  allowed_origins: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"],
  token_secret: SECRET,
  drain_window: 0.2,
  namespaces: {
    default: { kind: "plain", subscribe: "anyone", publish: "clients", history_size: 100, history_ttl: 300 },
    chat: {
      kind: "chat", subscribe: "anyone", publish: "clients", presence: true, join_leave: true,
      history_size: 1000, history_ttl: 86400,
    },
    live: { kind: "live", subscribe: "anyone", client_write: true },
    user: { subscribe: "user", publish: "server" },
    status: { kind: "status", subscribe: "authenticated", presence_grace: 5, history_size: 0 },
  },
  api_keys: [{ name: "quickstart", key: "quickstart-key", scopes: ["*"] }],
};

function isTable(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function merge(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isTable(v) && isTable(out[k]) ? merge(out[k], v) : v;
  return out;
}

function scalar(v) {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `[${v.map(scalar).join(", ")}]`;
  throw new TypeError(`cannot write ${v} as TOML`);
}

/** A tiny TOML writer: scalars and arrays of scalars, tables, arrays of tables. */
export function toToml(obj, path = []) {
  const lines = [];
  const tables = [];
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined || v === null) continue;
    if (isTable(v)) tables.push([k, v]);
    else if (Array.isArray(v) && v.length > 0 && v.every(isTable)) tables.push([k, v]);
    else lines.push(`${k} = ${scalar(v)}`);
  }
  for (const [k, v] of tables) {
    const name = [...path, k].join(".");
    if (Array.isArray(v)) {
      for (const item of v) lines.push("", `[[${name}]]`, toToml(item, [...path, k]));
    } else {
      lines.push("", `[${name}]`, toToml(v, [...path, k]));
    }
  }
  return lines.join("\n");
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Wait until `pattern` shows up in the child's `stream` (bounded by `ms`). */
function waitFor(child, stream, pattern, ms, what) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => done(new Error(`${what}: no ${pattern} within ${ms} ms:\n${seen.slice(-2000)}`)), ms);
    const onData = (chunk) => {
      seen += chunk.toString();
      const m = pattern.exec(seen);
      if (m) done(null, m);
    };
    const onExit = (code) => done(new Error(`${what} exited (${code}) before ${pattern}:\n${seen.slice(-2000)}`));
    function done(error, match) {
      clearTimeout(timer);
      child[stream].off("data", onData);
      child.off("exit", onExit);
      if (error) reject(error);
      else resolve(match);
    }
    child[stream].on("data", onData);
    child.once("exit", onExit);
  });
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once("exit", () => resolve()));
}

/**
 * Start a redis-server on a free port (no snapshots). With `persist`, an append-only file (fsync on every write)
 * in a temporary directory keeps the data across kill() + restart(). Returns { port, url, pid, kill(), restart(
 * { wipe }), stop() }: kill() SIGKILLs it; restart() starts it again on the same port (killing it first if it
 * runs; `wipe` deletes what it persisted first, so it comes back empty); stop() ends it and removes its files.
 */
export async function startRedis({ persist = false } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "realtime-js-redis-"));
  const persistence = persist ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"];
  let child;

  async function launch() {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir, ...persistence], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    await waitFor(child, "stdout", /Ready to accept connections/, 15000, "redis-server");
    child.stdout.resume();
    child.stderr.resume();
  }

  async function kill() {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited(child);
    }
  }

  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child.pid;
    },
    get child() {
      return child;
    },
    kill,
    async restart({ wipe = false } = {}) {
      await kill();
      if (wipe) {
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir);
      }
      await launch();
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Start a hub: quickstart's namespaces plus `config` overrides (top-level settings, or namespaces.<name>.<option>).
 * `redis`: false (memory engine), true (its own redis-server), or a server from startRedis() (or its URL) that
 * several hubs share: the hub neither starts nor stops that one.
 * Returns { url, port, httpUrl, redisUrl, stop(), kill(), restart() }: kill() SIGKILLs the hub (not Redis);
 * restart() starts it again on the same port (killing it first if it runs); stop() ends the hub and the Redis
 * it started.
 */
export async function startHub({ redis = false, config = {}, env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "realtime-js-"));
  const redisServer = redis === true ? await startRedis() : undefined;
  const redisUrl = redisServer?.url ?? (typeof redis === "string" ? redis : redis ? redis.url : undefined);
  const settings = merge(QUICKSTART, redisUrl ? { redis: redisUrl, ...config } : config);
  const file = join(dir, "hub.toml");
  writeFileSync(file, toToml(settings) + "\n");
  let child;
  let port = 0;

  async function launch() {
    child = spawn(PYTHON, ["-m", "realtime", "serve", "--port", String(port), "--config", file], {
      cwd: REPO,
      env: { ...process.env, PYTHONPATH: REPO, REALTIME_LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const m = await waitFor(child, "stderr", /listening on ws:\/\/([^:/]+):(\d+)\/ws/, 15000, "the hub");
    port = Number(m[2]);
    child.stderr.resume();
    child.stdout.resume();
  }

  async function kill() {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited(child);
    }
  }

  await launch();
  const hub = {
    get port() {
      return port;
    },
    get url() {
      return `ws://127.0.0.1:${port}/ws`;
    },
    get httpUrl() {
      return `http://127.0.0.1:${port}`;
    },
    redisUrl,
    get pid() {
      return child.pid;
    },
    kill,
    async restart() {
      await kill();
      await launch();
    },
    /** SIGTERM: the hub shuts down gracefully (Disconnect 4001 to every client). */
    async terminate() {
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await exited(child);
      }
    },
    async stop() {
      await hub.terminate();
      await redisServer?.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return hub;
}

function b64url(data) {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 JWT of `claims` (default secret: quickstart's). */
export function token(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** A promise that rejects after `ms` (for bounding waits in tests). */
export function within(promise, ms, what = "event") {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    }),
  ]);
}
