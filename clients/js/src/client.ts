/**
 * The Client: one reconnecting connection to a hub, its subscriptions and its commands.
 *
 * Retry rules (what the SDK sends again on its own):
 * - subscribe, history, read, receipts, presence, presence_stats, status, ping, unsubscribe: idempotent, so a
 *   command whose connection dropped before its reply is sent again on the next connection;
 * - publish: sent again with the same publish id (`key`) after a drop, 108 NOT_AVAILABLE or 116 OUTCOME_UNKNOWN,
 *   for signed-in users only (an anonymous user's ids do not outlive its connection): at most 3 sends;
 * - state_set, state_patch, typing: never (ConnectionLost after a drop);
 * - every command but typing refused with 110 TOO_MANY_REQUESTS is sent again after `retry_after` plus up to as
 *   much again, when that ends before its timeout.
 * Every command fails with CommandTimeout after `commandTimeout` ms without a reply (waiting for a connection
 * counts), and with AbortError when its signal aborts.
 */
import { TypedEmitter } from "./events.js";
import { Connection, type WebSocketConstructor, type WebSocketLike } from "./connection.js";
import { AbortError, CommandTimeout, ConnectionClosed, ConnectionLost, RealtimeError, ReplyError } from "./errors.js";
import { afterAdvice, backoff, busyWait } from "./protocol/backoff.js";
import { type Codec as WireCodec, codecFor, type Wire } from "./protocol/codec.js";
import {
  CloseCode,
  ErrorCode,
  isTemporary,
  MAX_HISTORY_PAGE,
  MAX_ID,
  MAX_STATUS_USERS,
  RECOVER,
  REFUSAL_FLOOR,
  shouldReconnect,
} from "./protocol/codes.js";
import {
  type HistoryPage,
  readHistory,
  readSent,
  readStatus,
  readSubscribe,
  type Sent,
  type UserStatus,
} from "./protocol/messages.js";
import { isMap, optU64, str, u64 } from "./protocol/values.js";
import { Subscription } from "./subscription.js";

export const VERSION = "0.1.0";

export type Codec = "msgpack" | "json";
export type ClientState = "idle" | "connecting" | "connected" | "paused" | "closed";

export interface ClientOptions {
  /** The connection token (JWT). */
  token?: string;
  /** Called for the first token when `token` is absent, before expiry (refresh), and after 109/4007. */
  getToken?: (signal: AbortSignal) => Promise<string>;
  /** "msgpack" (default) or "json". */
  codec?: Codec;
  /** A WebSocket implementation; default globalThis.WebSocket (browsers, React Native, Node 22+). */
  WebSocket?: WebSocketConstructor | (new (url: string, protocols?: string | string[]) => unknown);
  /** ms; default 10000. */
  commandTimeout?: number;
  /** Reconnect backoff bounds in ms (full jitter); default 500 / 20000. */
  minBackoff?: number;
  maxBackoff?: number;
  /** Sent in connect; default "js" and the SDK's version. */
  name?: string;
  version?: string;
  /** Default true: commands issued in one tick share a frame. */
  batchCommands?: boolean;
  /** The app's own credentials, sent in every connect, for a hub whose connect proxy asks the app's backend. */
  data?: unknown;
}

export interface ClientEvents {
  state: { state: ClientState };
  connected: { client: string; user: string; expires: number };
  disconnected: { code: number; reason: string; reconnect: boolean; retryAfter?: number };
  /** Non-fatal problems: a token refresh that failed, an error reply to no pending command... */
  error: { error: Error };
  /** Terminal: the client stopped. */
  closed: { code: number; reason: string };
}

export interface SubscribeOptions {
  /** A subscription token, for channels that require one (namespaces with `subscribe = "token"`). */
  token?: string;
  /** Where fresh subscription tokens come from: called before subscribing (when `token` is absent), before every
   * resubscribe, and after 109 TOKEN_EXPIRED. */
  getToken?: (signal: AbortSignal) => Promise<string>;
  signal?: AbortSignal;
}

export interface PresenceMember {
  user: string;
  info?: unknown;
}

interface CallOptions {
  /** Send again after a drop; a function is asked at the time of the drop. */
  retry: boolean | (() => boolean);
  /** Send again after 110 with retry_after. */
  whenBusy: boolean;
  signal?: AbortSignal | undefined;
  /** Called synchronously with the result, before later messages of the same frame are handled. */
  onResult?: (result: Wire, conn: Connection) => void;
}

interface Request extends CallOptions {
  cmd: Wire;
  resolve(result: Wire): void;
  reject(error: Error): void;
  done: boolean;
  deadline: number;
  timer?: ReturnType<typeof setTimeout> | undefined;
  busyTimer?: ReturnType<typeof setTimeout> | undefined;
  conn?: Connection | undefined;
  id?: number | undefined;
  /** Removes the listener on `signal` (when the request ends). */
  offAbort?: (() => void) | undefined;
}

/** Publish attempts of a signed-in user while the hub answers 108/116, and the delay step between them (ms). */
const PUBLISH_ATTEMPTS = 3;
const PUBLISH_RETRY_DELAY = 200;
/** The hub's default typing_interval (s): `typing(true)` is not sent more often than this by default. */
const TYPING_INTERVAL = 1000;
/** How long networkChanged() waits for a sign of life from a connection that looks open (ms). */
const PROBE_TIMEOUT = 5000;
const AUTH_ERRORS = new Set<number>([ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.PERMISSION_DENIED]);

/** A fresh publish id: 22 random URL-safe characters. */
export function newPublishKey(): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = new Uint8Array(22);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let out = "";
  for (const byte of bytes) out += alphabet[byte & 63];
  return out;
}

function abortReason(signal: AbortSignal): Error {
  const error = new AbortError();
  (error as { cause?: unknown }).cause = signal.reason;
  return error;
}

/**
 * A reconnecting connection to a hub. `await client.connect()`, then `subscribe`, `publish` and the other
 * commands; `pause()`/`resume()` follow the app's lifecycle, `close()` ends it.
 */
export class Client extends TypedEmitter<ClientEvents> {
  readonly url: string;
  private readonly options: Required<Omit<ClientOptions, "token" | "getToken" | "WebSocket" | "codec" | "data">>;
  private readonly codec: WireCodec;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly getToken: ((signal: AbortSignal) => Promise<string>) | undefined;
  private readonly connectData: unknown;
  private token: string | undefined;
  /** The token must come from getToken before the next connect (109/4007). */
  private tokenStale = false;

  private _state: ClientState = "idle";
  private _clientId = "";
  private _user = "";
  /** The hub's ping interval (ms). */
  private pingInterval = 25000;
  private expires = 0;

  private conn: Connection | undefined;
  private opening: Connection | undefined;
  private nextId = 0;
  private readonly pending = new Map<Connection, Map<number, Request>>();
  private waiting: Request[] = [];
  private readonly subs = new Map<string, Subscription>();
  private attempt = 0;
  private advice: number | undefined;
  private handshakeFailed = false;
  private closedError: ConnectionClosed | undefined;
  private connectWaiters: { resolve(): void; reject(e: Error): void }[] = [];

  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private aliveTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private tokenAbort: AbortController | undefined;
  private readonly typingUntil = new Map<string, number>();
  private readonly onOnline = (): void => this.networkChanged();

  constructor(url: string, options: ClientOptions = {}) {
    super();
    this.url = url;
    this.codec = codecFor(options.codec ?? "msgpack");
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) {
      throw new TypeError("no WebSocket implementation: pass one as options.WebSocket (in Node: the ws package)");
    }
    this.WebSocketImpl = WS as WebSocketConstructor;
    this.token = options.token;
    this.getToken = options.getToken;
    this.connectData = options.data;
    this.options = {
      commandTimeout: options.commandTimeout ?? 10000,
      minBackoff: options.minBackoff ?? 500,
      maxBackoff: options.maxBackoff ?? 20000,
      name: options.name ?? "js",
      version: options.version ?? VERSION,
      batchCommands: options.batchCommands ?? true,
    };
  }

  get state(): ClientState {
    return this._state;
  }
  /** The connection id of the current (or last) connection. */
  get clientId(): string {
    return this._clientId;
  }
  /** The user of the connection ("" when anonymous). */
  get user(): string {
    return this._user;
  }
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.subs;
  }

  // --- lifecycle -------------------------------------------------------------

  /**
   * Connect; resolves on the first connect reply. Retryable failures (hub unreachable, 4000-4499) are retried
   * with backoff meanwhile; rejects with ConnectionClosed on a terminal refusal (4500-4999, a bad token), or when
   * `signal` aborts (the client keeps trying then: call close() to stop it).
   */
  connect(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this._state === "closed") return Promise.reject(this.closedError);
    if (this._state === "connected") return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted) return reject(abortReason(signal));
      // The abort listener goes once the connect settles: a long-lived signal must not collect one per call.
      const onAbort = (): void => {
        this.connectWaiters = this.connectWaiters.filter((w) => w !== waiter);
        reject(abortReason(signal!));
      };
      const waiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error: Error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.connectWaiters.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    if (this._state === "idle") {
      const target = globalThis as { addEventListener?: (name: string, fn: () => void) => void; window?: unknown };
      if (target.window !== undefined && typeof target.addEventListener === "function") {
        target.addEventListener("online", this.onOnline);
      }
      this.open();
    }
    return promise;
  }

  /** Close for good: pending commands reject with ConnectionClosed, subscriptions end. */
  close(): void {
    this.stop(new ConnectionClosed(1000, "client closed"), true);
  }

  /** The app went to the background: close the socket (1000), keep subscriptions, stop every timer. */
  pause(): void {
    if (this._state === "closed" || this._state === "paused" || this._state === "idle") return;
    this.setState("paused");
    this.clearTimers();
    this.waiting.push(...this.busy.splice(0).filter((req) => !req.done));
    const conn = this.conn ?? this.opening;
    if (conn) conn.close(1000, "paused"); // dropped() runs now
    for (const req of this.waiting) this.stopTimers(req);
  }

  /** The app is back: reconnect now and resubscribe with recovery. */
  resume(): void {
    if (this._state !== "paused") return;
    const now = Date.now();
    for (const req of this.waiting) this.armTimeout(req, now + this.options.commandTimeout);
    this.attempt = 0;
    this.open();
  }

  /**
   * The network changed (NetInfo, `online`): reconnect at once with the backoff reset. A connection that looks
   * open is probed with a ping first, and replaced when nothing arrives within 5 s.
   */
  networkChanged(): void {
    if (this._state === "connecting" && this.reconnectTimer !== undefined) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      this.attempt = 0;
      this.advice = undefined;
      this.open();
    } else if (this._state === "connected" && this.conn) {
      const conn = this.conn;
      const sent = Date.now();
      this.call({ cmd: "ping" }, { retry: false, whenBusy: false }).catch(() => undefined);
      this.later(() => {
        if (this.conn === conn && conn.lastReceived < sent) {
          this.attempt = 0;
          conn.close(1000, "no answer after a network change");
        }
      }, PROBE_TIMEOUT);
    }
  }

  private setState(state: ClientState): void {
    if (this._state === state) return;
    this._state = state;
    this.emit("state", { state });
  }

  private clearTimers(): void {
    for (const timer of [this.reconnectTimer, this.aliveTimer, this.refreshTimer, ...this.timers]) {
      if (timer !== undefined) clearTimeout(timer);
    }
    this.reconnectTimer = this.aliveTimer = this.refreshTimer = undefined;
    this.timers.clear();
    this.tokenAbort?.abort();
    this.tokenAbort = undefined;
  }

  /** A one-shot timer that pause() and close() clear. */
  private later(fn: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  private stop(error: ConnectionClosed, byApp = false): void {
    if (this._state === "closed") return;
    this.closedError = error;
    this.clearTimers();
    for (const abort of this.subTokenAborts) abort.abort();
    this.subTokenAborts.clear();
    const target = globalThis as { removeEventListener?: (name: string, fn: () => void) => void };
    target.removeEventListener?.("online", this.onOnline);
    this.setState("closed");
    for (const req of [...this.waiting.splice(0), ...this.busy.splice(0)]) this.finish(req, error);
    for (const [, requests] of this.pending) for (const req of [...requests.values()]) this.finish(req, error);
    for (const conn of [this.conn, this.opening]) conn?.close(1000, "client closed");
    this.conn = this.opening = undefined;
    this.pending.clear();
    for (const sub of this.subs.values()) sub._end(byApp ? "closed" : error.reason || "closed", byApp ? undefined : error);
    this.subs.clear();
    for (const waiter of this.connectWaiters.splice(0)) waiter.reject(error);
    this.emit("closed", { code: error.code, reason: error.reason });
  }

  // --- connecting ------------------------------------------------------------

  private open(): void {
    if (this._state === "closed") return;
    this.setState("connecting");
    const needToken = this.getToken !== undefined && (this.token === undefined || this.tokenStale);
    if (!needToken) {
      this.openSocket();
      return;
    }
    this.fetchToken().then(
      () => this.openSocket(),
      (error: unknown) => {
        if (this._state !== "connecting") return; // paused or closed meanwhile
        this.emit("error", { error: new RealtimeError(`getToken failed: ${String(error)}`) });
        this.scheduleReconnect();
      },
    );
  }

  private async fetchToken(): Promise<void> {
    this.tokenAbort?.abort();
    const abort = (this.tokenAbort = new AbortController());
    const token = await this.getToken!(abort.signal);
    if (abort.signal.aborted) throw new AbortError("token request cancelled");
    this.token = token;
    this.tokenStale = false;
  }

  private openSocket(): void {
    if (this._state !== "connecting" || this.opening !== undefined) return;
    let conn: Connection;
    try {
      conn = new Connection(this.url, this.codec, this.WebSocketImpl, {
        open: (c) => this.opened(c),
        message: (c, message) => this.received(c, message),
        close: (c, code, reason) => this.dropped(c, code, reason),
        invalid: (_c, error) => this.emit("error", { error }),
      }, this.options.batchCommands);
    } catch (error) {
      // The WebSocket constructor refuses the URL (not ws/wss, malformed, a blocked port): it would every time.
      this.stop(new ConnectionClosed(CloseCode.BAD_REQUEST, `cannot open a WebSocket to ${this.url}: ${String((error as Error)?.message ?? error)}`));
      return;
    }
    this.opening = conn;
    this.pending.set(conn, new Map());
  }

  private opened(conn: Connection): void {
    if (conn.ws.protocol && conn.ws.protocol !== this.codec.subprotocol) {
      conn.close(1000, "subprotocol not accepted");
      return;
    }
    this.sendConnect(conn, false);
    // The connect must be answered within commandTimeout, else this socket is given up.
    this.later(() => {
      if (this.opening === conn) conn.close(1000, "no connect reply");
    }, this.options.commandTimeout);
  }

  private sendConnect(conn: Connection, renewed: boolean): void {
    const cmd: Wire = { cmd: "connect", token: this.token, name: this.options.name, version: this.options.version };
    if (this.connectData !== undefined) cmd["data"] = this.connectData;
    const req = this.makeRequest(cmd, { retry: false, whenBusy: false }, () => undefined, (error) => {
      if (this.opening !== conn) return;
      if (error instanceof ReplyError) this.connectRefused(conn, error, renewed);
    });
    req.onResult = (result) => this.connectedOn(conn, result);
    this.sendOn(conn, req);
  }

  private connectRefused(conn: Connection, error: ReplyError, renewed: boolean): void {
    if (error.code === ErrorCode.TOKEN_EXPIRED && this.getToken !== undefined && !renewed) {
      this.fetchToken().then(
        () => this.opening === conn && this.sendConnect(conn, true),
        (e: unknown) => {
          this.emit("error", { error: new RealtimeError(`getToken failed: ${String(e)}`) });
          if (this.opening === conn) conn.close(1000, "no token");
        },
      );
      return;
    }
    if (error.temporary) {
      conn.close(1000, "connect refused for now");
      return;
    }
    const code = AUTH_ERRORS.has(error.code) ? CloseCode.UNAUTHORIZED : CloseCode.BAD_REQUEST;
    this.stop(new ConnectionClosed(code, error.message));
  }

  private connectedOn(conn: Connection, result: Wire): void {
    if (this.opening !== conn) return;
    this.opening = undefined;
    this.conn = conn;
    this._clientId = str(result["client"], "client");
    this._user = typeof result["user"] === "string" ? result["user"] : "";
    this.pingInterval = typeof result["ping"] === "number" && result["ping"] > 0 ? result["ping"] * 1000 : 25000;
    this.expires = optU64(result["expires"], "expires") ?? 0;
    this.attempt = 0;
    this.advice = undefined;
    this.handshakeFailed = false;
    this.setState("connected");
    this.emit("connected", { client: this._clientId, user: this._user, expires: this.expires });
    this.scheduleAliveCheck(conn);
    this.scheduleRefresh(conn, false);
    for (const sub of this.subs.values()) if (sub._confirmed) this.resubscribe(conn, sub, false);
    const waiting = this.waiting.splice(0);
    for (const req of waiting) this.sendOn(conn, req);
    for (const waiter of this.connectWaiters.splice(0)) waiter.resolve();
  }

  private dropped(conn: Connection, code: number, reason: string): void {
    const disconnect = conn === this.conn || conn === this.opening ? this.disconnects.get(conn) : undefined;
    this.disconnects.delete(conn);
    const requests = this.pending.get(conn);
    this.pending.delete(conn);
    if (conn !== this.conn && conn !== this.opening) return;
    const wasOpen = conn.opened;
    if (this.conn === conn) this.conn = undefined;
    if (this.opening === conn) this.opening = undefined;
    if (this.aliveTimer !== undefined) clearTimeout(this.aliveTimer);
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.aliveTimer = this.refreshTimer = undefined;
    if (disconnect !== undefined) {
      code = typeof disconnect["code"] === "number" ? disconnect["code"] : code;
      reason = typeof disconnect["reason"] === "string" ? disconnect["reason"] : reason;
    }
    // The Disconnect push's advice, or (Node's ws only) an HTTP 503's Retry-After.
    const retryAfter = disconnect !== undefined && typeof disconnect["retry_after"] === "number"
      ? disconnect["retry_after"] : conn.refusedFor;
    // close() ends the client first: its own disconnect is not followed by a reconnect.
    const reconnect = this._state !== "closed" && (disconnect !== undefined && typeof disconnect["reconnect"] === "boolean"
      ? disconnect["reconnect"] : shouldReconnect(code));
    // Commands in flight: the idempotent ones wait for the next connection, the others fail.
    const lost = new ConnectionLost(code, reason);
    const again: Request[] = [];
    for (const req of requests?.values() ?? []) {
      req.conn = req.id = undefined;
      if (req.done) continue;
      const retry = typeof req.retry === "function" ? req.retry() : req.retry;
      if (retry && reconnect) again.push(req);
      else this.finish(req, lost);
    }
    this.waiting.unshift(...again);
    for (const sub of this.subs.values()) sub._held = undefined;
    const event: ClientEvents["disconnected"] = { code, reason, reconnect };
    if (retryAfter !== undefined) event.retryAfter = retryAfter;
    this.emit("disconnected", event);
    if (this._state === "paused" || this._state === "closed") return;
    if (!reconnect) {
      this.stop(new ConnectionClosed(code, reason));
      return;
    }
    if (code === CloseCode.TOKEN_EXPIRED) this.tokenStale = true;
    this.advice = retryAfter ?? REFUSAL_FLOOR[code];
    // A failed handshake (a browser sees only 1006): wait a second at least, as browsers do.
    this.handshakeFailed = !wasOpen;
    this.setState("connecting");
    this.scheduleReconnect();
  }

  private readonly disconnects = new Map<Connection, Wire>();

  private scheduleReconnect(): void {
    if (this._state !== "connecting") return;
    let delay = backoff(this.attempt++, this.options.minBackoff, this.options.maxBackoff);
    delay = afterAdvice(delay, this.advice ?? (this.handshakeFailed ? 1000 : undefined));
    this.advice = undefined;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.open();
    }, delay);
  }

  /** Dead-connection check for runtimes that cannot see WebSocket pings: ping after `ping` s of silence; dead after 2 × `ping`. */
  private scheduleAliveCheck(conn: Connection): void {
    const interval = this.pingInterval;
    let pinged = 0;
    const check = (): void => {
      this.aliveTimer = undefined;
      if (this.conn !== conn) return;
      const now = Date.now();
      const silent = now - conn.lastReceived;
      if (silent >= 2 * interval) {
        conn.close(1000, "no message for 2 × ping");
        return;
      }
      if (silent >= interval && pinged < conn.lastReceived + interval) {
        pinged = now;
        this.call({ cmd: "ping" }, { retry: false, whenBusy: false }).catch(() => undefined);
      }
      this.aliveTimer = setTimeout(check, Math.max(50, Math.min(interval / 2, conn.lastReceived + 2 * interval - now)));
    };
    this.aliveTimer = setTimeout(check, interval / 2);
  }

  /** Refresh the token a tenth of its lifetime (1..60 s) before it expires. */
  private scheduleRefresh(conn: Connection, failed: boolean): void {
    if (!this.expires || this.getToken === undefined) return;
    const remaining = this.expires * 1000 - Date.now();
    let wait = remaining - Math.max(1000, Math.min(60000, remaining / 10));
    if (failed) wait = Math.max(1000, Math.min(30000, remaining / 4));
    wait = Math.max(wait, 1000);
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      if (this.conn !== conn) return;
      this.fetchToken()
        .then(() => this.call({ cmd: "refresh", token: this.token }, { retry: false, whenBusy: true }))
        .then((result) => {
          this.expires = optU64(result["expires"], "expires") ?? 0;
          if (this.conn === conn) this.scheduleRefresh(conn, false);
        })
        .catch((error: unknown) => {
          if (this.conn !== conn || this._state !== "connected") return;
          this.emit("error", { error: new RealtimeError(`token refresh failed: ${String(error)}`) });
          if (this.expires * 1000 > Date.now()) this.scheduleRefresh(conn, true);
        });
    }, wait);
  }

  // --- frames ----------------------------------------------------------------

  private received(conn: Connection, message: Wire): void {
    if ("id" in message && !("push" in message)) {
      this.reply(conn, message);
      return;
    }
    const push = message["push"];
    if (push === "disconnect") {
      this.disconnects.set(conn, message);
      return;
    }
    if (conn !== this.conn) return;
    const channel = message["channel"];
    const sub = typeof channel === "string" ? this.subs.get(channel) : undefined;
    if (sub === undefined) return;
    if (push === "unsub") {
      if (message["reason"] === RECOVER) {
        // A resubscribe already under way covers this push: its reply is either a subscription made after the
        // hub's unsubscribe, or NOT_SUBSCRIBED (the unsubscribe caught it), which sends it again (below).
        if (sub._held === undefined) this.resubscribe(conn, sub, false);
      } else {
        this.subs.delete(sub.channel);
        sub._end(typeof message["reason"] === "string" ? message["reason"] : "unsubscribed");
      }
      return;
    }
    let gap: boolean;
    try {
      gap = sub._push(message);
    } catch (error) {
      // A position or version beyond Number.MAX_SAFE_INTEGER (PrecisionError), or a malformed push.
      this.subs.delete(sub.channel);
      sub._end((error as Error).message, error as RealtimeError);
      this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true }).catch(() => undefined);
      return;
    }
    if (gap) this.resubscribe(conn, sub, true);
  }

  private reply(conn: Connection, message: Wire): void {
    const id = message["id"];
    const error = message["error"];
    const requests = this.pending.get(conn);
    if (id === 0 && isMap(error) && requests !== undefined) {
      // The hub could not read one of our frames (protocol.md: an `id` of 0): its commands get no other reply.
      // Replies come in command order, so that frame is the oldest one still without a reply.
      const code = Number(error["code"]);
      const failure = new ReplyError(code, String(error["message"] ?? ""), false);
      const lost = conn.unreadFrame().map((n) => requests.get(n)).filter((r): r is Request => r !== undefined);
      for (const req of lost) this.finish(req, failure);
      if (lost.length > 0) return;
    }
    const req = typeof id === "number" ? requests?.get(id) : undefined;
    if (req === undefined) {
      if (isMap(error)) {
        this.emit("error", { error: new ReplyError(Number(error["code"]), String(error["message"] ?? ""), false) });
      }
      return;
    }
    requests!.delete(id as number);
    req.conn = req.id = undefined;
    if (req.done) return;
    if (isMap(error)) {
      const code = Number(error["code"]);
      const retryAfter = typeof error["retry_after"] === "number" ? error["retry_after"] : undefined;
      if (code === ErrorCode.TOO_MANY_REQUESTS && req.whenBusy && retryAfter !== undefined && retryAfter > 0) {
        // The hub's advice counts the refusals before this one (protocol.md, the command budget): each refused
        // command goes out again after its own advice plus up to as much again, so a burst comes back spread.
        this.busy.push(req);
        this.later(() => {
          const at = this.busy.indexOf(req);
          if (at < 0) return; // paused or closed meanwhile: moved to the waiting list or failed
          this.busy.splice(at, 1);
          if (!req.done) this.dispatch(req);
        }, busyWait(retryAfter));
        return;
      }
      this.finish(req, new ReplyError(code, String(error["message"] ?? ""), isTemporary(code), retryAfter));
      return;
    }
    const result = isMap(message["result"]) ? message["result"] : {};
    try {
      req.onResult?.(result, conn);
    } catch (e) {
      this.finish(req, e as Error);
      return;
    }
    this.finish(req, undefined, result);
  }

  /** Commands refused with 110, each waiting for its advice to pass. */
  private busy: Request[] = [];

  // --- commands --------------------------------------------------------------

  private makeRequest(cmd: Wire, options: CallOptions, resolve: (r: Wire) => void, reject: (e: Error) => void): Request {
    const req: Request = { ...options, cmd, resolve, reject, done: false, deadline: 0 };
    if (this._state !== "paused") this.armTimeout(req, Date.now() + this.options.commandTimeout);
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) {
        this.finish(req, abortReason(signal));
      } else {
        const onAbort = (): void => this.finish(req, abortReason(signal));
        signal.addEventListener("abort", onAbort, { once: true });
        req.offAbort = () => signal.removeEventListener("abort", onAbort);
      }
    }
    return req;
  }

  private armTimeout(req: Request, deadline: number): void {
    if (req.done) return;
    req.deadline = deadline;
    if (req.timer !== undefined) clearTimeout(req.timer);
    req.timer = setTimeout(() => {
      req.timer = undefined;
      this.finish(req, new CommandTimeout(`no reply to ${String(req.cmd["cmd"])} within ${this.options.commandTimeout} ms`));
    }, Math.max(0, deadline - Date.now()));
  }

  private stopTimers(req: Request): void {
    if (req.timer !== undefined) clearTimeout(req.timer);
    if (req.busyTimer !== undefined) clearTimeout(req.busyTimer);
    req.timer = req.busyTimer = undefined;
  }

  private finish(req: Request, error: Error | undefined, result?: Wire): void {
    if (req.done) return;
    req.done = true;
    this.stopTimers(req);
    req.offAbort?.();
    req.offAbort = undefined;
    if (req.conn !== undefined && req.id !== undefined) this.pending.get(req.conn)?.delete(req.id);
    const i = this.waiting.indexOf(req);
    if (i >= 0) this.waiting.splice(i, 1);
    if (error) req.reject(error);
    else req.resolve(result!);
  }

  /** Send now if connected, else wait for the next connection. */
  private dispatch(req: Request): void {
    if (req.done) return;
    if (this.conn !== undefined && this._state === "connected") this.sendOn(this.conn, req);
    else this.waiting.push(req);
  }

  private sendOn(conn: Connection, req: Request): void {
    const requests = this.pending.get(conn);
    if (requests === undefined) {
      this.waiting.push(req);
      return;
    }
    let id: number;
    do {
      this.nextId = (this.nextId % MAX_ID) + 1;
      id = this.nextId;
    } while (requests.has(id));
    req.id = id;
    req.conn = conn;
    requests.set(id, req);
    conn.send({ id, ...req.cmd });
  }

  /** Run one command; see the module's docstring for what is retried. */
  private call(cmd: Wire, options: CallOptions): Promise<Wire> {
    if (this._state === "closed") return Promise.reject(this.closedError);
    if (this._state === "idle") return Promise.reject(new RealtimeError("call connect() first"));
    return new Promise<Wire>((resolve, reject) => {
      const req = this.makeRequest(cmd, options, resolve, reject);
      this.dispatch(req);
    });
  }

  // --- subscriptions -----------------------------------------------------------

  /**
   * Subscribe to `channel`. Live channels: `sub.state` holds the snapshot when this resolves. Channels that need a
   * subscription token: pass `token`, or `getToken` (called before the subscribe, before every resubscribe, and
   * again when the hub answers 109 TOKEN_EXPIRED), so the subscription outlives any one token.
   */
  async subscribe(channel: string, options: SubscribeOptions = {}): Promise<Subscription> {
    if (this.subs.has(channel)) throw new RealtimeError(`already subscribed to ${channel}`);
    if (this._state === "closed") throw this.closedError!;
    if (this._state === "idle") throw new RealtimeError("call connect() first");
    const sub = new Subscription(this.subOwner, channel, options.token, options.getToken);
    this.subs.set(channel, sub);
    sub._held = [];
    let settle!: () => void;
    sub._settled = new Promise<void>((resolve) => (settle = resolve));
    try {
      // An earlier subscription of this channel, unsubscribed before the hub confirmed it, is undone by its own
      // reply (an unsubscribe): this subscribe goes out after that, else the hub answers 105 ALREADY_SUBSCRIBED.
      const leaving = this.leaving.get(channel);
      if (leaving !== undefined) await leaving;
      for (let attempt = 1; ; attempt++) {
        if (sub._getToken !== undefined && (attempt > 1 || sub._token === undefined)) {
          await this.subToken(sub, options.signal);
        }
        try {
          await this.call(this.subscribeCommand(sub, undefined, undefined), {
            retry: true,
            whenBusy: true,
            signal: options.signal,
            onResult: (result, conn) => {
              if (this.subs.get(channel) !== sub) {
                this.call({ cmd: "unsubscribe", channel }, { retry: false, whenBusy: true }).catch(() => undefined);
                return;
              }
              if (sub._subscribed(readSubscribe(result, channel), undefined, undefined)) this.resubscribe(conn, sub, true);
            },
          });
          break;
        } catch (error) {
          // An expired subscription token: one more try with a fresh one.
          const expired = error instanceof ReplyError && error.code === ErrorCode.TOKEN_EXPIRED;
          if (!expired || sub._getToken === undefined || attempt >= 2 || this.subs.get(channel) !== sub) throw error;
        }
      }
    } catch (error) {
      if (this.subs.get(channel) === sub) this.subs.delete(channel);
      sub._held = undefined;
      if (sub._confirmed) {
        // Confirmed, then the caller gave up (abort): undo it on the hub.
        this.call({ cmd: "unsubscribe", channel }, { retry: false, whenBusy: true }).catch(() => undefined);
      }
      throw error;
    } finally {
      settle();
    }
    return sub;
  }

  /** Channels whose subscribe is still under way though the app unsubscribed: settled once it is undone. */
  private readonly leaving = new Map<string, Promise<void>>();

  /** A fresh subscription token for `sub` from its getToken (cancelled by `signal`, pause() and close()). */
  private async subToken(sub: Subscription, signal?: AbortSignal): Promise<void> {
    const abort = new AbortController();
    const cancel = (): void => abort.abort();
    signal?.addEventListener("abort", cancel, { once: true });
    this.subTokenAborts.add(abort);
    try {
      if (signal?.aborted) throw abortReason(signal);
      const token = await sub._getToken!(abort.signal);
      if (signal?.aborted) throw abortReason(signal);
      if (abort.signal.aborted) throw new AbortError("token request cancelled");
      if (typeof token !== "string") throw new TypeError("getToken must resolve to a string");
      sub._token = token;
    } finally {
      signal?.removeEventListener("abort", cancel);
      this.subTokenAborts.delete(abort);
    }
  }

  private readonly subTokenAborts = new Set<AbortController>();

  private subscribeCommand(sub: Subscription, since: { offset: number; epoch: string } | undefined, version: number | undefined): Wire {
    const cmd: Wire = { cmd: "subscribe", channel: sub.channel };
    if (since !== undefined) {
      cmd["offset"] = since.offset;
      cmd["epoch"] = since.epoch;
    }
    if (sub._token !== undefined) cmd["token"] = sub._token;
    if (version !== undefined && version > 0) cmd["version"] = version;
    return cmd;
  }

  /**
   * Subscribe again from `sub`'s position and version (after a reconnect, an unsub "recover", or a gap), with a
   * fresh subscription token when the subscription has getToken (`renewed`: this one follows a 109).
   */
  private resubscribe(conn: Connection, sub: Subscription, unsubscribeFirst: boolean, renewed = false): void {
    if (this.subs.get(sub.channel) !== sub || this.conn !== conn) return;
    if (sub._held !== undefined && unsubscribeFirst) return; // one is under way already
    if (unsubscribeFirst) {
      this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true }).catch(() => undefined);
    }
    sub._held = [];
    if (sub._getToken === undefined) {
      this.sendResubscribe(conn, sub, renewed);
      return;
    }
    this.subToken(sub).then(
      () => this.sendResubscribe(conn, sub, renewed),
      (error: unknown) => {
        if (this.subs.get(sub.channel) !== sub || this.conn !== conn) return;
        // getToken failed (its backend unreachable...): try again after a backoff, as long as this connection lives.
        this.emit("error", { error: new RealtimeError(`getToken failed for ${sub.channel}: ${String(error)}`) });
        sub._held = undefined;
        this.later(() => this.resubscribe(conn, sub, false), backoff(1, this.options.minBackoff, this.options.maxBackoff));
      },
    );
  }

  private sendResubscribe(conn: Connection, sub: Subscription, renewed: boolean): void {
    if (this.subs.get(sub.channel) !== sub || this.conn !== conn) return;
    const since = sub._position();
    const version = sub.version > 0 ? sub.version : undefined;
    this.call(this.subscribeCommand(sub, since, version), {
      retry: false,
      whenBusy: true,
      onResult: (result) => {
        if (this.subs.get(sub.channel) !== sub) {
          this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true }).catch(() => undefined);
          return;
        }
        if (sub._subscribed(readSubscribe(result, sub.channel), since, version)) this.resubscribe(conn, sub, true);
      },
    }).catch((error: unknown) => {
      if (this.subs.get(sub.channel) !== sub) return;
      if (error instanceof ReplyError && error.code === ErrorCode.NOT_SUBSCRIBED) {
        // The hub unsubscribed the channel (an unsub "recover" push) while this subscribe was under way.
        sub._held = undefined;
        this.resubscribe(conn, sub, false, renewed);
      } else if (error instanceof ReplyError && error.code === ErrorCode.TOKEN_EXPIRED && sub._getToken !== undefined && !renewed) {
        sub._held = undefined;
        this.resubscribe(conn, sub, false, true);
      } else if (error instanceof ReplyError && error.temporary) {
        sub._held = undefined;
        this.later(() => this.resubscribe(conn, sub, false), Math.max(error.retryAfter ?? 0,
          backoff(1, this.options.minBackoff, this.options.maxBackoff)));
      } else if (error instanceof ReplyError || !(error instanceof ConnectionLost || error instanceof CommandTimeout
        || error instanceof ConnectionClosed)) {
        this.subs.delete(sub.channel);
        sub._end((error as Error).message, error as RealtimeError);
      }
      // Lost with the connection: the next connection resubscribes it.
    });
  }

  private readonly subOwner = { unsubscribeSub: (sub: Subscription) => this.unsubscribeSub(sub) };

  private async unsubscribeSub(sub: Subscription): Promise<void> {
    if (this.subs.get(sub.channel) !== sub) {
      sub._end("unsubscribed");
      return;
    }
    this.subs.delete(sub.channel);
    sub._end("unsubscribed");
    if (!sub._confirmed && sub._settled !== undefined) {
      // The subscribe's reply unsubscribes it; a new subscribe of the channel waits for that.
      const settled = sub._settled;
      this.leaving.set(sub.channel, settled);
      void settled.then(() => {
        if (this.leaving.get(sub.channel) === settled) this.leaving.delete(sub.channel);
      });
    }
    if (this._state !== "connected" || !sub._confirmed) return; // the subscribe's reply unsubscribes it
    try {
      await this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true });
    } catch (error) {
      if (error instanceof ReplyError && error.code !== ErrorCode.NOT_SUBSCRIBED) throw error;
      // Gone with the connection, or not subscribed: nothing to undo.
    }
  }

  // --- chat and channels -------------------------------------------------------

  /**
   * Publish `data` to `channel`. A publish id (`key`) is generated when not given; a signed-in user's publish is
   * sent again with the same key after a drop, 108 or 116, so it is stored at most once. Errors carry `key`.
   */
  async publish(channel: string, data: unknown, options: { key?: string; signal?: AbortSignal } = {}): Promise<Sent> {
    const key = options.key ?? newPublishKey();
    const cmd: Wire = { cmd: "publish", channel, data: data === undefined ? null : data, key };
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await this.call(cmd, { retry: () => this._user !== "", whenBusy: true, signal: options.signal });
        return readSent(result);
      } catch (error) {
        if (error instanceof RealtimeError) (error as { key?: string }).key = key;
        const retryable = error instanceof ReplyError
          && (error.code === ErrorCode.OUTCOME_UNKNOWN || error.code === ErrorCode.NOT_AVAILABLE);
        if (!retryable || this._user === "" || attempt >= PUBLISH_ATTEMPTS) throw error;
      }
      await new Promise<void>((resolve) => this.later(resolve, PUBLISH_RETRY_DELAY * attempt));
    }
  }

  /**
   * Call `method` of the app's backend (the hub's rpc proxy) with `data`; resolves with its answer. The backend's
   * refusals reject with a ReplyError carrying the app's own code (1000 and up) or 103; 108 (temporary): the
   * backend could not answer, and the call may or may not have run. Never sent again after a reconnect.
   */
  async rpc(method: string, data: unknown = null, options: { signal?: AbortSignal } = {}): Promise<unknown> {
    const result = await this.call({ cmd: "rpc", method, data: data === undefined ? null : data }, { retry: false, whenBusy: true, signal: options.signal });
    return result["data"] ?? null;
  }

  /** One page of history, oldest first: the newest `limit` (default and at most 100), or those before/after an offset. */
  async history(channel: string, options: { limit?: number; before?: number; after?: number; signal?: AbortSignal } = {}): Promise<HistoryPage> {
    if (options.before !== undefined && options.after !== undefined) throw new RealtimeError("pass before or after, not both");
    const cmd: Wire = { cmd: "history", channel };
    if (options.limit !== undefined) cmd["limit"] = options.limit;
    if (options.before !== undefined) cmd["before"] = options.before;
    if (options.after !== undefined) cmd["after"] = options.after;
    const result = await this.call(cmd, { retry: true, whenBusy: true, signal: options.signal });
    return readHistory(result, channel);
  }

  /**
   * Pages of history: without `after`, from the newest backwards (each page's `before` is the previous page's
   * first offset); with `after`, forwards. It follows `truncated` pages and full pages, and stops at a page that
   * is neither (or empty).
   */
  async *historyPages(channel: string, options: { limit?: number; before?: number; after?: number; signal?: AbortSignal } = {}): AsyncIterable<HistoryPage> {
    const limit = options.limit === undefined || options.limit <= 0 ? MAX_HISTORY_PAGE : Math.min(options.limit, MAX_HISTORY_PAGE);
    let { before, after } = options;
    for (;;) {
      const request: { limit: number; before?: number; after?: number; signal?: AbortSignal } = { limit };
      if (before !== undefined) request.before = before;
      if (after !== undefined) request.after = after;
      if (options.signal !== undefined) request.signal = options.signal;
      const page = await this.history(channel, request);
      if (page.publications.length === 0) return;
      yield page;
      if (!page.truncated && page.publications.length < limit) return;
      if (after === undefined) {
        before = page.publications[0]!.offset;
        if (before <= 1) return;
      } else {
        after = page.publications[page.publications.length - 1]!.offset;
      }
    }
  }

  /**
   * Tell a chat channel's subscribers this user is typing (or stopped). `true` is sent at most once per the hub's
   * typing interval per channel (1 s, or what a 110 reply's retry_after says): calls in between resolve at once.
   */
  async typing(channel: string, typing = true): Promise<void> {
    if (typing) {
      const until = this.typingUntil.get(channel) ?? 0;
      if (Date.now() < until) return;
      this.typingUntil.set(channel, Date.now() + TYPING_INTERVAL);
    } else {
      this.typingUntil.delete(channel);
    }
    try {
      await this.call({ cmd: "typing", channel, typing }, { retry: false, whenBusy: false });
    } catch (error) {
      if (typing && error instanceof ReplyError && error.code === ErrorCode.TOO_MANY_REQUESTS && error.retryAfter) {
        this.typingUntil.set(channel, Date.now() + error.retryAfter); // the indicator is on already
        return;
      }
      if (typing) this.typingUntil.delete(channel);
      throw error;
    }
  }

  /** Mark a chat channel read up to `offset`; returns the receipt the hub holds (it never moves backwards). */
  async read(channel: string, offset: number): Promise<number> {
    const result = await this.call({ cmd: "read", channel, offset }, { retry: true, whenBusy: true });
    return u64(result["read"], "read");
  }

  /** Who has read a chat channel up to where: user → offset. */
  async receipts(channel: string): Promise<Record<string, number>> {
    const result = await this.call({ cmd: "receipts", channel }, { retry: true, whenBusy: true });
    const out: Record<string, number> = {};
    const receipts = isMap(result["receipts"]) ? result["receipts"] : {};
    for (const [user, offset] of Object.entries(receipts)) out[user] = u64(offset, "receipt");
    return out;
  }

  /** Who is in `channel`: connection id → { user, info }. */
  async presence(channel: string): Promise<Record<string, PresenceMember>> {
    const result = await this.call({ cmd: "presence", channel }, { retry: true, whenBusy: true });
    const out: Record<string, PresenceMember> = {};
    const presence = isMap(result["presence"]) ? result["presence"] : {};
    for (const [client, member] of Object.entries(presence)) {
      if (!isMap(member)) continue;
      const entry: PresenceMember = { user: String(member["user"] ?? "") };
      if (member["info"] !== undefined && member["info"] !== null) entry.info = member["info"];
      out[client] = entry;
    }
    return out;
  }

  /** How many connections and unique users are in `channel`. */
  async presenceStats(channel: string): Promise<{ clients: number; users: number }> {
    const result = await this.call({ cmd: "presence_stats", channel }, { retry: true, whenBusy: true });
    return { clients: u64(result["clients"], "clients"), users: u64(result["users"], "users") };
  }

  /** Online status and last seen time of `users`, in order (100 per command). */
  async status(...users: string[]): Promise<UserStatus[]> {
    const out: UserStatus[] = [];
    for (let i = 0; i < users.length; i += MAX_STATUS_USERS) {
      const result = await this.call({ cmd: "status", users: users.slice(i, i + MAX_STATUS_USERS) }, { retry: true, whenBusy: true });
      const list = Array.isArray(result["users"]) ? result["users"] : [];
      out.push(...list.map(readStatus));
    }
    return out;
  }

  /** Set `key` of a live channel (null deletes it); with `version`, only if the key is still at it (else 115). */
  async stateSet(channel: string, key: string, value: unknown, options: { version?: number } = {}): Promise<number> {
    const cmd: Wire = { cmd: "state_set", channel, key, value: value === undefined ? null : value };
    if (options.version !== undefined) cmd["version"] = options.version;
    const result = await this.call(cmd, { retry: false, whenBusy: true });
    return u64(result["version"], "version");
  }

  /** Apply a JSON Merge Patch to `key` of a live channel; returns the channel's new version. */
  async statePatch(channel: string, key: string, patch: Record<string, unknown>, options: { version?: number } = {}): Promise<number> {
    if (!isMap(patch)) throw new TypeError("a merge patch is a map");
    const cmd: Wire = { cmd: "state_patch", channel, key, patch };
    if (options.version !== undefined) cmd["version"] = options.version;
    const result = await this.call(cmd, { retry: false, whenBusy: true });
    return u64(result["version"], "version");
  }

  /** Round trip to the hub through the protocol, in ms. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.call({ cmd: "ping" }, { retry: true, whenBusy: true });
    return Date.now() - start;
  }

  /** The hub's ping interval in seconds (from the last connect reply). */
  get serverPing(): number {
    return this.pingInterval / 1000;
  }
}

export type { WebSocketLike, WebSocketConstructor };
