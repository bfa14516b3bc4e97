/**
 * The two codecs: a frame holds one or more messages (maps), MessagePack maps concatenated or JSON objects one
 * per line (docs/protocol.md, "Frames and batching"). Pure: bytes or text in, plain maps out.
 *
 * Integers: a value that does not fit a safe JS number decodes as a bigint (both codecs), so nothing is rounded;
 * protocol fields (offsets, versions) are checked by the message layer (PrecisionError). Map keys that are not
 * strings (MessagePack data written by the server side) become strings as protocol.md's table says. A key
 * "__proto__" (legal in any client's data) stays an own property: Object.prototype is never touched.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";
import { ProtocolError } from "../errors.js";
import { JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL } from "./codes.js";
import { base64, isMap, mapKey, narrowInts } from "./values.js";

export type Wire = Record<string, unknown>;

export interface Codec {
  readonly name: "msgpack" | "json";
  readonly subprotocol: string;
  /** Binary frames (msgpack) or text frames (json). */
  readonly binary: boolean;
  encode(messages: readonly Wire[]): Uint8Array | string;
  decode(frame: Uint8Array | string): Wire[];
}

const encoder = new Encoder({ ignoreUndefined: true, useBigInt64: true });

/*
 * "__proto__" keys. @msgpack/msgpack 3 throws on a "__proto__" map key (the whole frame would be lost), and
 * stores other keys with `map[key] = value`, where "__proto__" would set the map's prototype. Its extension
 * points get around both without a fork: the key decoder (consulted for short string keys before that check)
 * returns a marker object for the 9 bytes "__proto__", the key converter turns the marker into a symbol (an own
 * property no setter sees), and ownProto() then renames the symbol to an own "__proto__" data property.
 */
const PROTO_BYTES = [95, 95, 112, 114, 111, 116, 111, 95, 95]; // "__proto__"
const PROTO_MARKER = Object.freeze({ key: "__proto__" });
const PROTO_KEY = Symbol("__proto__");
let sawProto = false;

const keyDecoder = {
  canBeCached: (byteLength: number): boolean => byteLength === PROTO_BYTES.length,
  decode(bytes: Uint8Array, at: number, byteLength: number): string {
    if (PROTO_BYTES.every((b, i) => bytes[at + i] === b)) {
      sawProto = true;
      return PROTO_MARKER as unknown as string;
    }
    return utf8(bytes.subarray(at, at + byteLength));
  },
};

/** A short UTF-8 string; TextDecoder is not in every React Native runtime, so ASCII goes without it. */
function utf8(bytes: Uint8Array): string {
  if (bytes.every((b) => b < 0x80)) return String.fromCharCode(...bytes);
  if (typeof TextDecoder !== "undefined") return new TextDecoder().decode(bytes);
  try {
    return decodeURIComponent(Array.from(bytes, (b) => `%${b.toString(16).padStart(2, "0")}`).join(""));
  } catch {
    return String.fromCharCode(...Array.from(bytes, (b) => (b < 0x80 ? b : 0xfffd)));
  }
}

function dataKey(key: unknown): string | number {
  const name = key === PROTO_MARKER ? "__proto__" : mapKey(key);
  if (name !== "__proto__") return name;
  sawProto = true;
  return PROTO_KEY as unknown as string;
}

/** Every map holding the PROTO_KEY symbol gets it back as an own "__proto__" data property, in place. */
function ownProto(value: unknown): void {
  if (Array.isArray(value)) {
    value.forEach(ownProto);
  } else if (isMap(value)) {
    const record = value as Record<string | symbol, unknown>;
    if (Object.prototype.hasOwnProperty.call(record, PROTO_KEY)) {
      Object.defineProperty(record, "__proto__", {
        value: record[PROTO_KEY], enumerable: true, writable: true, configurable: true,
      });
      delete record[PROTO_KEY];
    }
    for (const key of Object.keys(record)) ownProto(record[key]);
  }
}

const decoder = new Decoder({ useBigInt64: true, keyDecoder, mapKeyConverter: dataKey });

export const msgpackCodec: Codec = {
  name: "msgpack",
  subprotocol: MSGPACK_SUBPROTOCOL,
  binary: true,
  encode(messages) {
    const parts = messages.map((message) => encoder.encode(message));
    if (parts.length === 1) return parts[0]!;
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  },
  decode(frame) {
    if (typeof frame === "string") throw new ProtocolError("a text frame on the msgpack subprotocol");
    const out: Wire[] = [];
    let values: Generator<unknown>;
    sawProto = false;
    try {
      values = decoder.decodeMulti(frame) as Generator<unknown>;
      for (const value of values) {
        if (!isMap(value)) throw new ProtocolError("a message that is not a map");
        out.push(value);
      }
    } catch (error) {
      if (error instanceof ProtocolError) throw error;
      throw new ProtocolError(`a frame that does not decode: ${(error as Error).message}`);
    }
    // 64-bit ints come as bigint (useBigInt64); only frames holding such a head byte (cf, d3) need narrowing.
    if (sawProto) out.forEach(ownProto);
    if (frame.includes(0xcf) || frame.includes(0xd3)) out.forEach(narrowInts);
    return out;
  },
};

export const jsonCodec: Codec = {
  name: "json",
  subprotocol: JSON_SUBPROTOCOL,
  binary: false,
  encode(messages) {
    return messages.map(toJSON).join("\n");
  },
  decode(frame) {
    const text = typeof frame === "string" ? frame : new TextDecoder().decode(frame);
    const out: Wire[] = [];
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      let value: unknown;
      try {
        // A run of 16+ digits may be an integer JSON.parse would round: parse that line exactly.
        value = /\d{16}/.test(line) ? parseJSON(line) : JSON.parse(line);
      } catch (error) {
        throw new ProtocolError(`a line that is not JSON: ${(error as Error).message}`);
      }
      if (!isMap(value)) throw new ProtocolError("a message that is not a map");
      out.push(value);
    }
    return out;
  },
};

export function codecFor(name: "msgpack" | "json"): Codec {
  if (name === "msgpack") return msgpackCodec;
  if (name === "json") return jsonCodec;
  throw new TypeError(`codec must be "msgpack" or "json", got ${String(name)}`);
}

/** Compact JSON of a value; bigint as its digits, binary as base64 (what the hub gives JSON clients), NaN as null. */
export function toJSON(value: unknown): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "object":
      break;
    default:
      return "null";
  }
  if (value instanceof Uint8Array) return JSON.stringify(base64(value));
  if (Array.isArray(value)) return `[${value.map((item) => toJSON(item)).join(",")}]`;
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return toJSON((value as { toJSON: () => unknown }).toJSON());
  }
  const parts: string[] = [];
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (item === undefined || typeof item === "function" || typeof item === "symbol") continue;
    parts.push(`${JSON.stringify(key)}:${toJSON(item)}`);
  }
  return `{${parts.join(",")}}`;
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
// eslint-disable-next-line no-control-regex
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;

/** JSON.parse, except that integers outside the safe range come out as bigint instead of rounded numbers. */
export function parseJSON(text: string): unknown {
  let i = 0;
  const fail = (): never => {
    throw new SyntaxError(`unexpected input at ${i}`);
  };
  const ws = (): void => {
    while (i < text.length && " \t\r\n".includes(text[i]!)) i++;
  };
  const value = (): unknown => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj: Record<string, unknown> = {};
      ws();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        const key = string();
        ws();
        if (text[i++] !== ":") fail();
        Object.defineProperty(obj, key, { value: value(), enumerable: true, writable: true, configurable: true });
        ws();
        const next = text[i++];
        if (next === "}") return obj;
        if (next !== ",") fail();
      }
    }
    if (c === "[") {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        const next = text[i++];
        if (next === "]") return arr;
        if (next !== ",") fail();
      }
    }
    if (c === '"') return string();
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m) {
      i += m[0].length;
      if (m[1] === undefined && m[2] === undefined) {
        const n = Number(m[0]);
        return Number.isSafeInteger(n) ? n : BigInt(m[0]);
      }
      return Number(m[0]);
    }
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    return fail();
  };
  const string = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text);
    if (!m) return fail();
    i += m[0].length;
    return JSON.parse(m[0]) as string;
  };
  const result = value();
  ws();
  if (i !== text.length) fail();
  return result;
}
