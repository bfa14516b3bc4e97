/** Value rules shared by both codecs: integers, non-string map keys, base64. Pure. */
import { PrecisionError, ProtocolError } from "../errors.js";

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Standard base64 with padding (RFC 4648 §4), as the hub writes binary for JSON clients. */
export function base64(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i]!;
    const b = bytes[i + 1];
    const c = bytes[i + 2];
    out += B64[a >> 2]! + B64[((a & 3) << 4) | ((b ?? 0) >> 4)]!;
    out += b === undefined ? "=" : B64[((b & 15) << 2) | ((c ?? 0) >> 6)]!;
    out += c === undefined ? "=" : B64[c & 63]!;
  }
  return out;
}

/** A map key that is not a string, as protocol.md's table converts it: 1 → "1", true → "true", nil → "null", binary → base64. */
export function mapKey(key: unknown): string {
  if (typeof key === "string") return key;
  if (key === null || key === undefined) return "null";
  if (key instanceof Uint8Array) return base64(key);
  if (typeof key === "number" || typeof key === "bigint" || typeof key === "boolean") return String(key);
  try {
    return JSON.stringify(key, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) ?? String(key);
  } catch {
    return String(key);
  }
}

/** Turns every bigint that fits a safe number back into a number, in place; unsafe ones stay bigint. */
export function narrowInts(value: unknown): unknown {
  if (typeof value === "bigint") {
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = narrowInts(value[i]);
  } else if (typeof value === "object" && value !== null && !(value instanceof Uint8Array)) {
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) record[key] = narrowInts(record[key]);
  }
  return value;
}

/** A uint64 protocol field (offset, version...): a safe number, or PrecisionError. */
export function u64(value: unknown, field: string): number {
  if (typeof value === "bigint") {
    throw new PrecisionError(`${field} ${value} is above Number.MAX_SAFE_INTEGER`);
  }
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new ProtocolError(`${field} is not a uint64: ${String(value)}`);
  }
  if (!Number.isSafeInteger(value)) throw new PrecisionError(`${field} ${value} is above Number.MAX_SAFE_INTEGER`);
  return value;
}

/** An optional uint64 field: undefined when absent or null. */
export function optU64(value: unknown, field: string): number | undefined {
  return value === undefined || value === null ? undefined : u64(value, field);
}

/** A number field (int or float), bigint allowed when it fits. */
export function num(value: unknown, field: string): number {
  if (typeof value === "number") return value;
  if (typeof value === "bigint") throw new PrecisionError(`${field} ${value} is above Number.MAX_SAFE_INTEGER`);
  throw new ProtocolError(`${field} is not a number: ${String(value)}`);
}

export function str(value: unknown, field: string): string {
  if (typeof value !== "string") throw new ProtocolError(`${field} is not a string`);
  return value;
}

export function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}
