/**
 * One WebSocket to the hub: encodes and batches outgoing messages, decodes incoming frames. The Client opens
 * one Connection at a time and decides what to do when it ends.
 */
import type { Codec, Wire } from "./protocol/codec.js";
import { MAX_BATCH } from "./protocol/codes.js";

/** What the SDK needs of a WebSocket: the browser/React Native API, or Node's `ws` package. */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

interface HttpResponse {
  statusCode?: number;
  headers?: Record<string, string | string[] | undefined>;
}

/** Retry-After (delay-seconds, or an HTTP date) in ms; undefined when absent or unreadable. */
function retryAfterMs(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text.trim() === "") return undefined;
  if (/^\s*\d+\s*$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ConnectionHandlers {
  open(conn: Connection): void;
  message(conn: Connection, message: Wire): void;
  /** The socket ended (once); `code` as seen (1006 without a close frame). */
  close(conn: Connection, code: number, reason: string): void;
  /** A frame that does not decode: the connection is closed after this. */
  invalid(conn: Connection, error: Error): void;
}

export class Connection {
  readonly ws: WebSocketLike;
  /** When anything last arrived (ms, Date.now()). */
  lastReceived = Date.now();
  opened = false;
  /**
   * The advice (ms) of an HTTP refusal of the upgrade (503 + Retry-After), where the WebSocket shows it: Node's
   * `ws` does ("unexpected-response"); browsers and React Native show a failed handshake only as close 1006.
   */
  refusedFor: number | undefined;
  private outbox: Wire[] = [];
  /** The command ids of each frame sent, oldest first, while any of them waits for a reply. */
  private frames: number[][] = [];
  private readonly unanswered = new Set<number>();
  private flushing = false;
  private ended = false;

  constructor(
    url: string,
    readonly codec: Codec,
    WebSocketImpl: WebSocketConstructor,
    private readonly handlers: ConnectionHandlers,
    private readonly batch: boolean,
  ) {
    const ws = new WebSocketImpl(url, [codec.subprotocol]);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (this.ended) return;
      this.opened = true;
      this.lastReceived = Date.now();
      handlers.open(this);
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => this.end(event.code || 1006, event.reason || "");
    ws.onerror = () => undefined; // a close event follows
    const native = ws as unknown as { on?: (event: string, fn: (req: unknown, res: HttpResponse) => void) => void };
    if (typeof native.on === "function") {
      native.on("unexpected-response", (_req, res) => {
        this.refusedFor = retryAfterMs(res.headers?.["retry-after"]);
        try {
          const terminate = (ws as unknown as { terminate?: () => void }).terminate;
          if (typeof terminate === "function") terminate.call(ws);
          else ws.close();
        } catch {
          // closing already: the close event follows
        }
      });
    }
  }

  get ended_(): boolean {
    return this.ended;
  }

  /** Queue `message`; messages queued in the same tick go out in one frame (at most 100 per frame). */
  send(message: Wire): void {
    if (this.ended) return;
    this.outbox.push(message);
    if (!this.batch) {
      this.flush();
    } else if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(() => {
        this.flushing = false;
        this.flush();
      });
    }
  }

  flush(): void {
    if (this.ended) return;
    while (this.outbox.length > 0) {
      const batch = this.outbox.splice(0, MAX_BATCH);
      this.forgetAnswered();
      const ids = batch.map((m) => m["id"]).filter((id): id is number => typeof id === "number");
      for (const id of ids) this.unanswered.add(id);
      this.frames.push(ids);
      try {
        this.ws.send(this.codec.encode(batch));
      } catch {
        this.end(1006, "send failed");
        return;
      }
    }
  }

  /**
   * The ids of the oldest frame with a command still unanswered, forgotten from now on: the frame an error
   * reply with id 0 is about (the hub replies in command order).
   */
  unreadFrame(): number[] {
    this.forgetAnswered();
    const ids = this.frames.shift() ?? [];
    for (const id of ids) this.unanswered.delete(id);
    return ids;
  }

  private forgetAnswered(): void {
    while (this.frames.length > 0 && this.frames[0]!.every((id) => !this.unanswered.has(id))) this.frames.shift();
  }

  /** Close the socket and end now: no event of this socket reaches the client after this. */
  close(code = 1000, reason = ""): void {
    if (this.ended) return;
    this.end(code, reason, true);
  }

  private receive(data: unknown): void {
    if (this.ended) return;
    this.lastReceived = Date.now();
    let messages: Wire[];
    try {
      const frame = typeof data === "string" ? data : data instanceof ArrayBuffer ? new Uint8Array(data)
        : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : String(data);
      messages = this.codec.decode(frame);
    } catch (error) {
      this.handlers.invalid(this, error as Error);
      this.end(1002, "invalid frame", true);
      return;
    }
    for (const message of messages) {
      if (this.ended) return;
      if (typeof message["id"] === "number" && !("push" in message)) this.unanswered.delete(message["id"]);
      this.handlers.message(this, message);
    }
  }

  private end(code: number, reason: string, closeSocket = false): void {
    if (this.ended) return;
    this.ended = true;
    this.outbox = [];
    const ws = this.ws;
    if (closeSocket) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        // Browsers accept only 1000 and 3000-4999 from a page.
        ws.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
      } catch {
        // already closing
      }
    }
    this.handlers.close(this, code, reason);
  }
}
