/** Error codes of error replies and close codes (docs/protocol.md, "Error codes" and "Close codes"). */

export const ErrorCode = {
  INTERNAL: 100,
  UNAUTHORIZED: 101,
  UNKNOWN_CHANNEL: 102,
  PERMISSION_DENIED: 103,
  UNKNOWN_COMMAND: 104,
  ALREADY_SUBSCRIBED: 105,
  LIMIT_EXCEEDED: 106,
  BAD_REQUEST: 107,
  NOT_AVAILABLE: 108,
  TOKEN_EXPIRED: 109,
  TOO_MANY_REQUESTS: 110,
  UNRECOVERABLE_POSITION: 111,
  NOT_SUBSCRIBED: 112,
  DUPLICATE_ID: 113,
  ALREADY_CONNECTED: 114,
  CONFLICT: 115,
  OUTCOME_UNKNOWN: 116,
} as const;

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  SHUTDOWN: 4001,
  SLOW: 4002,
  STALE: 4003,
  INTERNAL: 4004,
  CONNECT_TIMEOUT: 4005,
  FORCE_RECONNECT: 4006,
  TOKEN_EXPIRED: 4007,
  OVERLOADED: 4008,
  TOO_MANY_CONNECTIONS: 4009,
  TOO_MANY_REQUESTS: 4010,
  BAD_REQUEST: 4500,
  UNAUTHORIZED: 4501,
  FORCE_DISCONNECT: 4502,
} as const;

const TEMPORARY = new Set<number>([
  ErrorCode.INTERNAL,
  ErrorCode.NOT_AVAILABLE,
  ErrorCode.TOO_MANY_REQUESTS,
  ErrorCode.OUTCOME_UNKNOWN,
]);

/** Whether an error code is temporary: the same command may succeed later. */
export function isTemporary(code: number): boolean {
  return TEMPORARY.has(code);
}

/** Whether a client reconnects after a close code: any code outside 4500-4999. */
export function shouldReconnect(code: number): boolean {
  return code < 4500 || code > 4999;
}

/** Milliseconds to wait at least after a 4008/4009 refusal whose Disconnect push (and its advice) was lost. */
export const REFUSAL_FLOOR: Readonly<Record<number, number>> = {
  [CloseCode.OVERLOADED]: 1000,
  [CloseCode.TOO_MANY_CONNECTIONS]: 30000,
};

export const MSGPACK_SUBPROTOCOL = "realtime.v1.msgpack";
export const JSON_SUBPROTOCOL = "realtime.v1.json";
/** Commands per frame the hub accepts. */
export const MAX_BATCH = 100;
/** Largest command id; ids run 1..MAX_ID. */
export const MAX_ID = 4294967295;
/** Users per status command. */
export const MAX_STATUS_USERS = 100;
/** Publications per history page. */
export const MAX_HISTORY_PAGE = 100;
/** The unsub reason that asks for a resubscribe from the client's position. */
export const RECOVER = "recover";
