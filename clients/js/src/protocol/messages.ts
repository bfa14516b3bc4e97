/** Reading the hub's maps into the SDK's types, with the integer rules (PrecisionError). Pure. */
import { ProtocolError } from "../errors.js";
import type { Wire } from "./codec.js";
import { isMap, num, optU64, str, u64 } from "./values.js";

export interface Sender {
  user: string;
  client: string;
  info?: unknown;
}

export interface Message {
  channel: string;
  data: unknown;
  offset: number;
  epoch: string;
  /** Chat channels: the message id. */
  mid?: string;
  /** With `mid`: the hub's time of the message, ms since the Unix epoch. */
  time?: number;
  /** Who published it, when the hub says. */
  sender?: Sender;
}

export interface Sent {
  offset: number;
  epoch: string;
  mid?: string;
  time?: number;
}

export interface UserStatus {
  user: string;
  online: boolean;
  /** When the user was last online, ms since the Unix epoch; 0 when not known. */
  lastSeen: number;
}

export interface HistoryPage {
  publications: Message[];
  /** Where the stream stands now. */
  offset: number;
  epoch: string;
  /** The page stopped at the hub's byte budget: more publications are in the range asked for. */
  truncated: boolean;
}

export interface StateEntry {
  key: string;
  value: unknown;
  version: number;
}

export interface SubscribeResult {
  offset: number;
  epoch: string;
  recoverable: boolean;
  recovered: boolean;
  publications: Message[];
  version: number;
  state: StateEntry[];
  full: boolean;
  status?: UserStatus;
}

export function readMessage(wire: Wire, channel?: string): Message {
  const message: Message = {
    channel: channel ?? str(wire["channel"], "channel"),
    data: wire["data"] ?? null,
    offset: u64(wire["offset"], "offset"),
    epoch: str(wire["epoch"], "epoch"),
  };
  if (typeof wire["mid"] === "string") message.mid = wire["mid"];
  if (wire["time"] !== undefined && wire["time"] !== null) message.time = num(wire["time"], "time");
  const info = wire["info"];
  if (isMap(info)) {
    const sender: Sender = { user: String(info["user"] ?? ""), client: String(info["client"] ?? "") };
    if (info["info"] !== undefined && info["info"] !== null) sender.info = info["info"];
    message.sender = sender;
  }
  return message;
}

export function readSent(result: Wire): Sent {
  const sent: Sent = { offset: u64(result["offset"], "offset"), epoch: str(result["epoch"], "epoch") };
  if (typeof result["mid"] === "string") sent.mid = result["mid"];
  if (result["time"] !== undefined && result["time"] !== null) sent.time = num(result["time"], "time");
  return sent;
}

export function readStatus(wire: unknown): UserStatus {
  if (!isMap(wire)) throw new ProtocolError("a status that is not a map");
  return {
    user: str(wire["user"], "user"),
    online: wire["online"] === true,
    lastSeen: wire["last_seen"] === undefined ? 0 : num(wire["last_seen"], "last_seen"),
  };
}

export function readSubscribe(result: Wire, channel: string): SubscribeResult {
  const pubs = Array.isArray(result["publications"]) ? result["publications"] : [];
  const state = Array.isArray(result["state"]) ? result["state"] : [];
  const out: SubscribeResult = {
    offset: u64(result["offset"], "offset"),
    epoch: str(result["epoch"], "epoch"),
    recoverable: result["recoverable"] === true,
    recovered: result["recovered"] === true,
    publications: pubs.map((p) => readMessage(isMap(p) ? p : {}, channel)),
    version: optU64(result["version"], "version") ?? 0,
    state: state.map((e) => {
      if (!isMap(e)) throw new ProtocolError("a state entry that is not a map");
      return { key: str(e["key"], "key"), value: e["value"] ?? null, version: u64(e["version"], "version") };
    }),
    full: result["full"] === true,
  };
  if (isMap(result["status"])) out.status = readStatus(result["status"]);
  return out;
}

export function readHistory(result: Wire, channel: string): HistoryPage {
  const pubs = Array.isArray(result["publications"]) ? result["publications"] : [];
  return {
    publications: pubs.map((p) => readMessage(isMap(p) ? p : {}, channel)),
    offset: u64(result["offset"], "offset"),
    epoch: str(result["epoch"], "epoch"),
    truncated: result["truncated"] === true,
  };
}
