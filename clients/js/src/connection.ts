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
  private outbox: Wire[] = [];
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
      try {
        this.ws.send(this.codec.encode(batch));
      } catch {
        this.end(1006, "send failed");
        return;
      }
    }
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
