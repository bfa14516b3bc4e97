/** A channel subscription: its publications, events, live state and status, as the client feeds them. */
import type { RealtimeError } from "./errors.js";
import { TypedEmitter } from "./events.js";
import type { Wire } from "./protocol/codec.js";
import { LiveState } from "./protocol/liveState.js";
import { type Message, readMessage, readStatus, type SubscribeResult, type UserStatus } from "./protocol/messages.js";
import { isMap, str, u64 } from "./protocol/values.js";

export interface SubscriptionEvents {
  publication: Message;
  join: { user: string; info?: unknown };
  leave: { user: string };
  /** `timeout`: ms after which `typing: true` lapses; clear the indicator then even without `typing: false`. */
  typing: { user: string; typing: boolean; timeout?: number };
  read: { user: string; offset: number };
  state: { key: string; value: unknown; version: number };
  status: UserStatus;
  /** Every (re)subscribe reply. */
  subscribed: { recovered: boolean; recoverable: boolean };
  /** "You missed data, reload": a resubscribe could not recover what was missed, or the stream restarted. */
  unrecovered: Record<string, never>;
  unsubscribed: { reason: string };
}

/** What a Subscription needs of its client. */
export interface SubscriptionOwner {
  unsubscribeSub(sub: Subscription): Promise<void>;
}

type Waiter = { resolve: (r: IteratorResult<Message>) => void; reject: (e: unknown) => void };
/** One iterator's queue: what was delivered since it was created and not yet taken. */
type Reader = { buffer: Message[]; waiter: Waiter | undefined };

/**
 * A channel subscription. Listen with `sub.on("publication", ...)` (and the other events), or iterate it with
 * `for await (const message of sub)`: each iterator gets every publication delivered from its creation on (it
 * buffers them until taken), stops buffering when the loop exits (`break`, `return()`), and ends after
 * `unsubscribe()`, `client.close()`, or with the error that ended the subscription.
 */
export class Subscription extends TypedEmitter<SubscriptionEvents> implements AsyncIterable<Message> {
  readonly channel: string;
  private _offset = 0;
  private _epoch = "";
  private _recoverable = false;
  private _recovered: boolean | undefined = undefined;
  private readonly live = new LiveState();
  private _status: UserStatus | undefined;
  private ended = false;
  private endError: RealtimeError | undefined;
  private readonly readers = new Set<Reader>();

  /** @internal Confirmed once by the hub: from then on the client resubscribes it itself. */
  _confirmed = false;
  /** @internal Pushes that came while a (re)subscribe waited for its reply. */
  _held: Wire[] | undefined;
  /** @internal The subscription token, sent again with each resubscribe (fetched anew when `_getToken` is set). */
  _token: string | undefined;
  /** @internal Settled when the first subscribe of this subscription has ended (resolved or not). */
  _settled: Promise<void> | undefined;
  /** @internal Where a fresh subscription token comes from, for every resubscribe and after 109. */
  readonly _getToken: ((signal: AbortSignal) => Promise<string>) | undefined;

  /** @internal */
  constructor(
    private readonly owner: SubscriptionOwner,
    channel: string,
    token?: string,
    getToken?: (signal: AbortSignal) => Promise<string>,
  ) {
    super();
    this.channel = channel;
    this._token = token;
    this._getToken = getToken;
  }

  /** The offset of the last publication delivered (or where the stream stood at the last subscribe). */
  get offset(): number {
    return this._offset;
  }
  get epoch(): string {
    return this._epoch;
  }
  /** The channel keeps history: a recovery after a drop can work. */
  get recoverable(): boolean {
    return this._recoverable;
  }
  /** Whether the last resubscribe got back everything missed (undefined before any resubscribe). */
  get recovered(): boolean | undefined {
    return this._recovered;
  }
  /** Live channels: key → value, complete up to `version`. */
  get state(): ReadonlyMap<string, unknown> {
    return this.live.values;
  }
  get version(): number {
    return this.live.version;
  }
  /** Live channels: the version that set `key` (0 when absent), for a conditional write. */
  keyVersion(key: string): number {
    return this.live.keyVersion(key);
  }
  /** Status channels: the user's status. */
  get status(): UserStatus | undefined {
    return this._status;
  }
  /** True once unsubscribed or ended by the hub or the client. */
  get closed(): boolean {
    return this.ended;
  }

  /** Stop receiving this channel; iteration ends after what is already buffered. */
  unsubscribe(): Promise<void> {
    return this.owner.unsubscribeSub(this);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Message> {
    const reader: Reader = { buffer: [], waiter: undefined };
    if (!this.ended) this.readers.add(reader);
    let finished = false;
    const iterator: AsyncIterableIterator<Message> = {
      next: () => {
        if (reader.buffer.length > 0) return Promise.resolve({ value: reader.buffer.shift()!, done: false });
        if (this.ended || finished) {
          return this.endError && !finished ? Promise.reject(this.endError) : Promise.resolve({ value: undefined, done: true });
        }
        if (reader.waiter !== undefined) return Promise.reject(new TypeError("next() called again before the last one settled"));
        return new Promise((resolve, reject) => (reader.waiter = { resolve, reject }));
      },
      // The loop exited (break, return, throw): stop buffering for it.
      return: () => {
        finished = true;
        this.readers.delete(reader);
        reader.buffer = [];
        reader.waiter?.resolve({ value: undefined, done: true });
        reader.waiter = undefined;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  // --- used by the client --------------------------------------------------

  /** @internal The position a resubscribe recovers from, once confirmed. */
  _position(): { offset: number; epoch: string } | undefined {
    return this._confirmed ? { offset: this._offset, epoch: this._epoch } : undefined;
  }

  /** @internal Take one push of this channel; true when it shows a gap to heal. */
  _push(push: Wire): boolean {
    if (this.ended) return false;
    if (this._held !== undefined) {
      this._held.push(push);
      return false;
    }
    return this.handle(push);
  }

  /** @internal A (re)subscribe reply: deliver recovered publications, apply state, then what was held. */
  _subscribed(result: SubscribeResult, since: { offset: number; epoch: string } | undefined, asked: number | undefined): boolean {
    const first = !this._confirmed;
    let gap = false;
    const held = this._held ?? [];
    this._held = undefined;
    if (first || !result.recovered) {
      // A new subscription, or a gap the hub could not fill: carry on from where the stream stands.
      this._offset = result.offset;
      this._epoch = result.epoch;
    } else {
      for (const pub of result.publications) gap = !this.deliver(pub) || gap;
      if (this._epoch === result.epoch && this._offset < result.offset) this._offset = result.offset;
    }
    this._recoverable = result.recoverable;
    for (const change of this.live.applySnapshot(result.version, result.state, asked, !first, result.full)) {
      this.emit("state", change);
    }
    if (result.status !== undefined) {
      if (!first && JSON.stringify(result.status) !== JSON.stringify(this._status)) this.emit("status", result.status);
      this._status = result.status;
    }
    this._confirmed = true;
    for (const push of held) {
      if (push["push"] === "pub" && push["epoch"] !== result.epoch && !(result.offset === 0 && result.epoch === "")) continue;
      gap = this.handle(push) || gap;
    }
    if (since !== undefined) this._recovered = result.recovered;
    this.emit("subscribed", { recovered: result.recovered, recoverable: result.recoverable });
    if (since !== undefined && !result.recovered) this.emit("unrecovered", {});
    return gap;
  }

  /** @internal End the subscription: iterators end (with `error` if set), "unsubscribed" is emitted. */
  _end(reason: string, error?: RealtimeError): void {
    if (this.ended) return;
    this.ended = true;
    this.endError = error;
    this._held = undefined;
    for (const reader of this.readers) {
      const waiter = reader.waiter;
      reader.waiter = undefined;
      if (waiter && error) waiter.reject(error);
      else waiter?.resolve({ value: undefined, done: true });
    }
    this.readers.clear();
    this.emit("unsubscribed", { reason });
  }

  private handle(push: Wire): boolean {
    switch (push["push"]) {
      case "pub":
        return !this.deliver(readMessage(push, this.channel));
      case "state": {
        const version = u64(push["version"], "version");
        const changes = this.live.apply(str(push["key"], "key"), version, { value: push["value"], patch: push["patch"] });
        if (changes === null) return true;
        for (const change of changes) this.emit("state", change);
        return false;
      }
      case "join": {
        const event: { user: string; info?: unknown } = { user: String(push["user"] ?? "") };
        if (push["info"] !== undefined && push["info"] !== null) event.info = push["info"];
        this.emit("join", event);
        return false;
      }
      case "leave":
        this.emit("leave", { user: String(push["user"] ?? "") });
        return false;
      case "typing": {
        const event: { user: string; typing: boolean; timeout?: number } = {
          user: String(push["user"] ?? ""),
          typing: push["typing"] !== false,
        };
        // Seconds on the wire; milliseconds here, as every duration of this SDK.
        if (typeof push["timeout"] === "number") event.timeout = Math.round(push["timeout"] * 1000);
        this.emit("typing", event);
        return false;
      }
      case "read":
        this.emit("read", { user: String(push["user"] ?? ""), offset: u64(push["offset"], "offset") });
        return false;
      case "status": {
        const status = readStatus(push);
        this._status = status;
        this.emit("status", status);
        return false;
      }
      default:
        return false; // pushes of a type this SDK does not know are ignored
    }
  }

  /** Deliver one publication in order; false when it shows a gap (it is not delivered). */
  private deliver(message: Message): boolean {
    const unstarted = this._offset === 0 && this._epoch === "";
    if (message.epoch === this._epoch) {
      if (message.offset <= this._offset) return true; // a repeat
      if (message.offset > this._offset + 1 && this._confirmed) return false;
    } else if (!unstarted && this._confirmed) {
      // The stream restarted: what it held is gone.
      this._recovered = false;
      this.emit("unrecovered", {});
    }
    this._offset = message.offset;
    this._epoch = message.epoch;
    this.emit("publication", message);
    for (const reader of this.readers) {
      const waiter = reader.waiter;
      reader.waiter = undefined;
      if (waiter) waiter.resolve({ value: message, done: false });
      else reader.buffer.push(message);
    }
    return true;
  }
}

export function isSubscriptionPush(wire: Wire): boolean {
  return typeof wire["push"] === "string" && typeof wire["channel"] === "string" && isMap(wire);
}
