/** Every error the SDK raises derives from RealtimeError. */

export class RealtimeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
    Object.setPrototypeOf(this, new.target.prototype);
  }
}

/** The hub answered a command with an error reply. `temporary`: the same command may succeed later. */
export class ReplyError extends RealtimeError {
  readonly code: number;
  readonly temporary: boolean;
  /** Milliseconds the hub advised to wait before sending the command again (110 TOO_MANY_REQUESTS). */
  readonly retryAfter?: number;
  /** The publish id of a failed publish: publish again with `{ key }` to store the message at most once. */
  key?: string;
  constructor(code: number, message: string, temporary: boolean, retryAfter?: number) {
    super(`${code}: ${message}`);
    this.code = code;
    this.temporary = temporary;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

/** The client stopped for good: close() was called, or the hub refused it with a terminal code (4500-4999). */
export class ConnectionClosed extends RealtimeError {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string) {
    super(`connection closed: ${code} ${reason}`);
    this.code = code;
    this.reason = reason;
  }
}

/**
 * A command's connection dropped before its reply, and the command is not one the SDK sends again on its own
 * (state writes, typing; publishes of anonymous users). It may or may not have run.
 */
export class ConnectionLost extends RealtimeError {
  readonly code: number;
  key?: string;
  constructor(code: number, reason: string) {
    super(`connection lost before the reply: ${code} ${reason}`);
    this.code = code;
  }
}

/** No reply (or no connection) within `commandTimeout`. */
export class CommandTimeout extends RealtimeError {
  key?: string;
}

/** An offset or version from the hub above Number.MAX_SAFE_INTEGER: it cannot be held without rounding. */
export class PrecisionError extends RealtimeError {}

/** The hub sent something that breaks the protocol (a frame that does not decode, a reply of the wrong shape). */
export class ProtocolError extends RealtimeError {}

/** The call was cancelled through its AbortSignal. */
export class AbortError extends RealtimeError {
  constructor(message = "aborted") {
    super(message);
  }
}
