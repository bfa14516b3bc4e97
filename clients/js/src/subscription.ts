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

/**
 * A channel subscription. Listen with `sub.on("publication", ...)` (and the other events), or iterate it with
 * `for await (const message of sub)`: publications are buffered for iteration from the first iterator on, and
 * iteration ends after `unsubscribe()`, `client.close()`, or with the error that ended the subscription.
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
  private buffer: Message[] | undefined;
  private waiters: Waiter[] = [];

  /** @internal Confirmed once by the hub: from then on the client resubscribes it itself. */
  _confirmed = false;
  /** @internal Pushes that came while a (re)subscribe waited for its reply. */
  _held: Wire[] | undefined;
  /** @internal The subscription token, sent again with each resubscribe (fetched anew when `_getToken` is set). */
  _token: string | undefined;
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

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    this.buffer ??= [];
    return {
      next: () => {
        const buffer = this.buffer!;
        if (buffer.length > 0) return Promise.resolve({ value: buffer.shift()!, done: false });
        if (this.ended) {
          return this.endError ? Promise.reject(this.endError) : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
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
    for (const waiter of this.waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve({ value: undefined, done: true });
    }
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
        if (typeof push["timeout"] === "number") event.timeout = push["timeout"];
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
    if (this.buffer !== undefined) {
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve({ value: message, done: false });
      else this.buffer.push(message);
    }
    return true;
  }
}

export function isSubscriptionPush(wire: Wire): boolean {
  return typeof wire["push"] === "string" && typeof wire["channel"] === "string" && isMap(wire);
}
