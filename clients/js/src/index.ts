export * from "./errors.js";
export { ErrorCode, CloseCode, isTemporary, shouldReconnect } from "./protocol/codes.js";
export { backoff, afterAdvice } from "./protocol/backoff.js";
export { applyMergePatch } from "./protocol/mergePatch.js";
export { msgpackCodec, jsonCodec, codecFor, parseJSON } from "./protocol/codec.js";
export type { Codec as WireCodec, Wire } from "./protocol/codec.js";
