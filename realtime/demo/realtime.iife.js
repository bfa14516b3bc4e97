"use strict";
var Realtime = (() => {
  var __defProp = Object.defineProperty;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
  var __export = (target, all) => {
    for (var name in all)
      __defProp(target, name, { get: all[name], enumerable: true });
  };
  var __copyProps = (to, from, except, desc) => {
    if (from && typeof from === "object" || typeof from === "function") {
      for (let key of __getOwnPropNames(from))
        if (!__hasOwnProp.call(to, key) && key !== except)
          __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
    }
    return to;
  };
  var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);
  var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

  // src/index.ts
  var index_exports = {};
  __export(index_exports, {
    AbortError: () => AbortError,
    Client: () => Client,
    CloseCode: () => CloseCode,
    CommandTimeout: () => CommandTimeout,
    ConnectionClosed: () => ConnectionClosed,
    ConnectionLost: () => ConnectionLost,
    ErrorCode: () => ErrorCode,
    LiveState: () => LiveState,
    PrecisionError: () => PrecisionError,
    ProtocolError: () => ProtocolError,
    RealtimeError: () => RealtimeError,
    ReplyError: () => ReplyError,
    Subscription: () => Subscription,
    TypedEmitter: () => TypedEmitter,
    VERSION: () => VERSION,
    afterAdvice: () => afterAdvice,
    applyMergePatch: () => applyMergePatch,
    backoff: () => backoff,
    codecFor: () => codecFor,
    isTemporary: () => isTemporary,
    jsonCodec: () => jsonCodec,
    msgpackCodec: () => msgpackCodec,
    newPublishKey: () => newPublishKey,
    parseJSON: () => parseJSON,
    shouldReconnect: () => shouldReconnect,
    toJSON: () => toJSON
  });

  // src/events.ts
  var TypedEmitter = class {
    constructor() {
      this.listeners = /* @__PURE__ */ new Map();
    }
    /** Calls `listener` with each `name` event; returns a function that removes it. */
    on(name, listener) {
      let set = this.listeners.get(name);
      if (set === void 0) this.listeners.set(name, set = /* @__PURE__ */ new Set());
      set.add(listener);
      return () => this.off(name, listener);
    }
    /** Calls `listener` with the next `name` event only. */
    once(name, listener) {
      const off = this.on(name, (event) => {
        off();
        listener(event);
      });
      return off;
    }
    off(name, listener) {
      this.listeners.get(name)?.delete(listener);
    }
    /** The next `name` event as a promise (rejects with AbortError-like reason when `signal` aborts). */
    next(name, signal) {
      return new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const onAbort = () => {
          off();
          reject(signal.reason);
        };
        const off = this.once(name, (event) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(event);
        });
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    }
    /** Listeners that throw do not stop the others; their errors are rethrown asynchronously. */
    emit(name, event) {
      const set = this.listeners.get(name);
      if (set === void 0) return;
      for (const listener of [...set]) {
        try {
          listener(event);
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  };

  // src/protocol/codes.ts
  var ErrorCode = {
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
    OUTCOME_UNKNOWN: 116
  };
  var CloseCode = {
    NORMAL: 1e3,
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
    FORCE_DISCONNECT: 4502
  };
  var TEMPORARY = /* @__PURE__ */ new Set([
    ErrorCode.INTERNAL,
    ErrorCode.NOT_AVAILABLE,
    ErrorCode.TOO_MANY_REQUESTS,
    ErrorCode.OUTCOME_UNKNOWN
  ]);
  function isTemporary(code) {
    return TEMPORARY.has(code);
  }
  function shouldReconnect(code) {
    return code < 4500 || code > 4999;
  }
  var REFUSAL_FLOOR = {
    [CloseCode.OVERLOADED]: 1e3,
    [CloseCode.TOO_MANY_CONNECTIONS]: 3e4
  };
  var MSGPACK_SUBPROTOCOL = "realtime.v1.msgpack";
  var JSON_SUBPROTOCOL = "realtime.v1.json";
  var MAX_BATCH = 100;
  var MAX_ID = 4294967295;
  var MAX_STATUS_USERS = 100;
  var MAX_HISTORY_PAGE = 100;
  var RECOVER = "recover";

  // src/connection.ts
  function retryAfterMs(value) {
    const text = Array.isArray(value) ? value[0] : value;
    if (text === void 0 || text.trim() === "") return void 0;
    if (/^\s*\d+\s*$/.test(text)) return Number(text) * 1e3;
    const date = Date.parse(text);
    return Number.isNaN(date) ? void 0 : Math.max(0, date - Date.now());
  }
  var Connection = class {
    constructor(url, codec, WebSocketImpl, handlers, batch) {
      this.codec = codec;
      this.handlers = handlers;
      this.batch = batch;
      /** When anything last arrived (ms, Date.now()). */
      this.lastReceived = Date.now();
      this.opened = false;
      this.outbox = [];
      /** The command ids of each frame sent, oldest first, while any of them waits for a reply. */
      this.frames = [];
      this.unanswered = /* @__PURE__ */ new Set();
      this.flushing = false;
      this.ended = false;
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
      ws.onerror = () => void 0;
      const native = ws;
      if (typeof native.on === "function") {
        native.on("unexpected-response", (_req, res) => {
          this.refusedFor = retryAfterMs(res.headers?.["retry-after"]);
          try {
            const terminate = ws.terminate;
            if (typeof terminate === "function") terminate.call(ws);
            else ws.close();
          } catch {
          }
        });
      }
    }
    get ended_() {
      return this.ended;
    }
    /** Queue `message`; messages queued in the same tick go out in one frame (at most 100 per frame). */
    send(message) {
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
    flush() {
      if (this.ended) return;
      while (this.outbox.length > 0) {
        const batch = this.outbox.splice(0, MAX_BATCH);
        this.forgetAnswered();
        const ids = batch.map((m) => m["id"]).filter((id) => typeof id === "number");
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
    unreadFrame() {
      this.forgetAnswered();
      const ids = this.frames.shift() ?? [];
      for (const id of ids) this.unanswered.delete(id);
      return ids;
    }
    forgetAnswered() {
      while (this.frames.length > 0 && this.frames[0].every((id) => !this.unanswered.has(id))) this.frames.shift();
    }
    /** Close the socket and end now: no event of this socket reaches the client after this. */
    close(code = 1e3, reason = "") {
      if (this.ended) return;
      this.end(code, reason, true);
    }
    receive(data) {
      if (this.ended) return;
      this.lastReceived = Date.now();
      let messages;
      try {
        const frame = typeof data === "string" ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : String(data);
        messages = this.codec.decode(frame);
      } catch (error) {
        this.handlers.invalid(this, error);
        this.end(1002, "invalid frame", true);
        return;
      }
      for (const message of messages) {
        if (this.ended) return;
        if (typeof message["id"] === "number" && !("push" in message)) this.unanswered.delete(message["id"]);
        this.handlers.message(this, message);
      }
    }
    end(code, reason, closeSocket = false) {
      if (this.ended) return;
      this.ended = true;
      this.outbox = [];
      const ws = this.ws;
      if (closeSocket) {
        ws.onopen = ws.onmessage = ws.onclose = null;
        try {
          ws.close(code === 1e3 || code >= 3e3 && code <= 4999 ? code : 1e3, reason);
        } catch {
        }
      }
      this.handlers.close(this, code, reason);
    }
  };

  // src/errors.ts
  var RealtimeError = class extends Error {
    constructor(message) {
      super(message);
      this.name = new.target.name;
      Object.setPrototypeOf(this, new.target.prototype);
    }
  };
  var ReplyError = class extends RealtimeError {
    constructor(code, message, temporary, retryAfter) {
      super(`${code}: ${message}`);
      this.code = code;
      this.temporary = temporary;
      if (retryAfter !== void 0) this.retryAfter = retryAfter;
    }
  };
  var ConnectionClosed = class extends RealtimeError {
    constructor(code, reason) {
      super(`connection closed: ${code} ${reason}`);
      this.code = code;
      this.reason = reason;
    }
  };
  var ConnectionLost = class extends RealtimeError {
    constructor(code, reason) {
      super(`connection lost before the reply: ${code} ${reason}`);
      this.code = code;
    }
  };
  var CommandTimeout = class extends RealtimeError {
  };
  var PrecisionError = class extends RealtimeError {
  };
  var ProtocolError = class extends RealtimeError {
  };
  var AbortError = class extends RealtimeError {
    constructor(message = "aborted") {
      super(message);
    }
  };

  // src/protocol/backoff.ts
  function backoff(attempt, min, max, random = Math.random) {
    const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
    return random() * ceiling;
  }
  function afterAdvice(delay, advice, random = Math.random) {
    if (advice === void 0 || advice <= 0) return delay;
    return Math.max(delay, advice * (1 + 0.5 * random()));
  }
  function busyWait(retryAfter, random = Math.random) {
    return retryAfter * (1 + random());
  }

  // node_modules/@msgpack/msgpack/dist.esm/utils/utf8.mjs
  function utf8Count(str2) {
    const strLength = str2.length;
    let byteLength = 0;
    let pos = 0;
    while (pos < strLength) {
      let value = str2.charCodeAt(pos++);
      if ((value & 4294967168) === 0) {
        byteLength++;
        continue;
      } else if ((value & 4294965248) === 0) {
        byteLength += 2;
      } else {
        if (value >= 55296 && value <= 56319) {
          if (pos < strLength) {
            const extra = str2.charCodeAt(pos);
            if ((extra & 64512) === 56320) {
              ++pos;
              value = ((value & 1023) << 10) + (extra & 1023) + 65536;
            }
          }
        }
        if ((value & 4294901760) === 0) {
          byteLength += 3;
        } else {
          byteLength += 4;
        }
      }
    }
    return byteLength;
  }
  function utf8EncodeJs(str2, output, outputOffset) {
    const strLength = str2.length;
    let offset = outputOffset;
    let pos = 0;
    while (pos < strLength) {
      let value = str2.charCodeAt(pos++);
      if ((value & 4294967168) === 0) {
        output[offset++] = value;
        continue;
      } else if ((value & 4294965248) === 0) {
        output[offset++] = value >> 6 & 31 | 192;
      } else {
        if (value >= 55296 && value <= 56319) {
          if (pos < strLength) {
            const extra = str2.charCodeAt(pos);
            if ((extra & 64512) === 56320) {
              ++pos;
              value = ((value & 1023) << 10) + (extra & 1023) + 65536;
            }
          }
        }
        if ((value & 4294901760) === 0) {
          output[offset++] = value >> 12 & 15 | 224;
          output[offset++] = value >> 6 & 63 | 128;
        } else {
          output[offset++] = value >> 18 & 7 | 240;
          output[offset++] = value >> 12 & 63 | 128;
          output[offset++] = value >> 6 & 63 | 128;
        }
      }
      output[offset++] = value & 63 | 128;
    }
  }
  var sharedTextEncoder = new TextEncoder();
  var TEXT_ENCODER_THRESHOLD = 50;
  function utf8EncodeTE(str2, output, outputOffset) {
    sharedTextEncoder.encodeInto(str2, output.subarray(outputOffset));
  }
  function utf8Encode(str2, output, outputOffset) {
    if (str2.length > TEXT_ENCODER_THRESHOLD) {
      utf8EncodeTE(str2, output, outputOffset);
    } else {
      utf8EncodeJs(str2, output, outputOffset);
    }
  }
  var CHUNK_SIZE = 4096;
  function utf8DecodeJs(bytes, inputOffset, byteLength) {
    let offset = inputOffset;
    const end = offset + byteLength;
    const units = [];
    let result = "";
    while (offset < end) {
      const byte1 = bytes[offset++];
      if ((byte1 & 128) === 0) {
        units.push(byte1);
      } else if ((byte1 & 224) === 192) {
        const byte2 = bytes[offset++] & 63;
        units.push((byte1 & 31) << 6 | byte2);
      } else if ((byte1 & 240) === 224) {
        const byte2 = bytes[offset++] & 63;
        const byte3 = bytes[offset++] & 63;
        units.push((byte1 & 31) << 12 | byte2 << 6 | byte3);
      } else if ((byte1 & 248) === 240) {
        const byte2 = bytes[offset++] & 63;
        const byte3 = bytes[offset++] & 63;
        const byte4 = bytes[offset++] & 63;
        let unit = (byte1 & 7) << 18 | byte2 << 12 | byte3 << 6 | byte4;
        if (unit > 65535) {
          unit -= 65536;
          units.push(unit >>> 10 & 1023 | 55296);
          unit = 56320 | unit & 1023;
        }
        units.push(unit);
      } else {
        units.push(byte1);
      }
      if (units.length >= CHUNK_SIZE) {
        result += String.fromCharCode(...units);
        units.length = 0;
      }
    }
    if (units.length > 0) {
      result += String.fromCharCode(...units);
    }
    return result;
  }
  var sharedTextDecoder = new TextDecoder();
  var TEXT_DECODER_THRESHOLD = 200;
  function utf8DecodeTD(bytes, inputOffset, byteLength) {
    const stringBytes = bytes.subarray(inputOffset, inputOffset + byteLength);
    return sharedTextDecoder.decode(stringBytes);
  }
  function utf8Decode(bytes, inputOffset, byteLength) {
    if (byteLength > TEXT_DECODER_THRESHOLD) {
      return utf8DecodeTD(bytes, inputOffset, byteLength);
    } else {
      return utf8DecodeJs(bytes, inputOffset, byteLength);
    }
  }

  // node_modules/@msgpack/msgpack/dist.esm/ExtData.mjs
  var ExtData = class {
    constructor(type, data) {
      __publicField(this, "type");
      __publicField(this, "data");
      this.type = type;
      this.data = data;
    }
  };

  // node_modules/@msgpack/msgpack/dist.esm/DecodeError.mjs
  var DecodeError = class _DecodeError extends Error {
    constructor(message) {
      super(message);
      const proto = Object.create(_DecodeError.prototype);
      Object.setPrototypeOf(this, proto);
      Object.defineProperty(this, "name", {
        configurable: true,
        enumerable: false,
        value: _DecodeError.name
      });
    }
  };

  // node_modules/@msgpack/msgpack/dist.esm/utils/int.mjs
  var UINT32_MAX = 4294967295;
  function setUint64(view, offset, value) {
    const high = value / 4294967296;
    const low = value;
    view.setUint32(offset, high);
    view.setUint32(offset + 4, low);
  }
  function setInt64(view, offset, value) {
    const high = Math.floor(value / 4294967296);
    const low = value;
    view.setUint32(offset, high);
    view.setUint32(offset + 4, low);
  }
  function getInt64(view, offset) {
    const high = view.getInt32(offset);
    const low = view.getUint32(offset + 4);
    return high * 4294967296 + low;
  }
  function getUint64(view, offset) {
    const high = view.getUint32(offset);
    const low = view.getUint32(offset + 4);
    return high * 4294967296 + low;
  }

  // node_modules/@msgpack/msgpack/dist.esm/timestamp.mjs
  var EXT_TIMESTAMP = -1;
  var TIMESTAMP32_MAX_SEC = 4294967296 - 1;
  var TIMESTAMP64_MAX_SEC = 17179869184 - 1;
  function encodeTimeSpecToTimestamp({ sec, nsec }) {
    if (sec >= 0 && nsec >= 0 && sec <= TIMESTAMP64_MAX_SEC) {
      if (nsec === 0 && sec <= TIMESTAMP32_MAX_SEC) {
        const rv = new Uint8Array(4);
        const view = new DataView(rv.buffer);
        view.setUint32(0, sec);
        return rv;
      } else {
        const secHigh = sec / 4294967296;
        const secLow = sec & 4294967295;
        const rv = new Uint8Array(8);
        const view = new DataView(rv.buffer);
        view.setUint32(0, nsec << 2 | secHigh & 3);
        view.setUint32(4, secLow);
        return rv;
      }
    } else {
      const rv = new Uint8Array(12);
      const view = new DataView(rv.buffer);
      view.setUint32(0, nsec);
      setInt64(view, 4, sec);
      return rv;
    }
  }
  function encodeDateToTimeSpec(date) {
    const msec = date.getTime();
    const sec = Math.floor(msec / 1e3);
    const nsec = (msec - sec * 1e3) * 1e6;
    const nsecInSec = Math.floor(nsec / 1e9);
    return {
      sec: sec + nsecInSec,
      nsec: nsec - nsecInSec * 1e9
    };
  }
  function encodeTimestampExtension(object) {
    if (object instanceof Date) {
      const timeSpec = encodeDateToTimeSpec(object);
      return encodeTimeSpecToTimestamp(timeSpec);
    } else {
      return null;
    }
  }
  function decodeTimestampToTimeSpec(data) {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    switch (data.byteLength) {
      case 4: {
        const sec = view.getUint32(0);
        const nsec = 0;
        return { sec, nsec };
      }
      case 8: {
        const nsec30AndSecHigh2 = view.getUint32(0);
        const secLow32 = view.getUint32(4);
        const sec = (nsec30AndSecHigh2 & 3) * 4294967296 + secLow32;
        const nsec = nsec30AndSecHigh2 >>> 2;
        return { sec, nsec };
      }
      case 12: {
        const sec = getInt64(view, 4);
        const nsec = view.getUint32(0);
        return { sec, nsec };
      }
      default:
        throw new DecodeError(`Unrecognized data size for timestamp (expected 4, 8, or 12): ${data.length}`);
    }
  }
  function decodeTimestampExtension(data) {
    const timeSpec = decodeTimestampToTimeSpec(data);
    return new Date(timeSpec.sec * 1e3 + timeSpec.nsec / 1e6);
  }
  var timestampExtension = {
    type: EXT_TIMESTAMP,
    encode: encodeTimestampExtension,
    decode: decodeTimestampExtension
  };

  // node_modules/@msgpack/msgpack/dist.esm/ExtensionCodec.mjs
  var _ExtensionCodec = class _ExtensionCodec {
    constructor() {
      // ensures ExtensionCodecType<X> matches ExtensionCodec<X>
      // this will make type errors a lot more clear
      // eslint-disable-next-line @typescript-eslint/naming-convention
      __publicField(this, "__brand");
      // built-in extensions
      __publicField(this, "builtInEncoders", []);
      __publicField(this, "builtInDecoders", []);
      // custom extensions
      __publicField(this, "encoders", []);
      __publicField(this, "decoders", []);
      this.register(timestampExtension);
    }
    register({ type, encode, decode }) {
      if (type >= 0) {
        this.encoders[type] = encode;
        this.decoders[type] = decode;
      } else {
        const index = -1 - type;
        this.builtInEncoders[index] = encode;
        this.builtInDecoders[index] = decode;
      }
    }
    tryToEncode(object, context) {
      for (let i = 0; i < this.builtInEncoders.length; i++) {
        const encodeExt = this.builtInEncoders[i];
        if (encodeExt != null) {
          const data = encodeExt(object, context);
          if (data != null) {
            const type = -1 - i;
            return new ExtData(type, data);
          }
        }
      }
      for (let i = 0; i < this.encoders.length; i++) {
        const encodeExt = this.encoders[i];
        if (encodeExt != null) {
          const data = encodeExt(object, context);
          if (data != null) {
            const type = i;
            return new ExtData(type, data);
          }
        }
      }
      if (object instanceof ExtData) {
        return object;
      }
      return null;
    }
    decode(data, type, context) {
      const decodeExt = type < 0 ? this.builtInDecoders[-1 - type] : this.decoders[type];
      if (decodeExt) {
        return decodeExt(data, type, context);
      } else {
        return new ExtData(type, data);
      }
    }
  };
  __publicField(_ExtensionCodec, "defaultCodec", new _ExtensionCodec());
  var ExtensionCodec = _ExtensionCodec;

  // node_modules/@msgpack/msgpack/dist.esm/utils/typedArrays.mjs
  function isArrayBufferLike(buffer) {
    return buffer instanceof ArrayBuffer || typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
  }
  function ensureUint8Array(buffer) {
    if (buffer instanceof Uint8Array) {
      return buffer;
    } else if (ArrayBuffer.isView(buffer)) {
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    } else if (isArrayBufferLike(buffer)) {
      return new Uint8Array(buffer);
    } else {
      return Uint8Array.from(buffer);
    }
  }

  // node_modules/@msgpack/msgpack/dist.esm/Encoder.mjs
  var DEFAULT_MAX_DEPTH = 100;
  var DEFAULT_INITIAL_BUFFER_SIZE = 2048;
  var Encoder = class _Encoder {
    constructor(options) {
      __publicField(this, "extensionCodec");
      __publicField(this, "context");
      __publicField(this, "useBigInt64");
      __publicField(this, "maxDepth");
      __publicField(this, "initialBufferSize");
      __publicField(this, "sortKeys");
      __publicField(this, "forceFloat32");
      __publicField(this, "ignoreUndefined");
      __publicField(this, "forceIntegerToFloat");
      __publicField(this, "pos");
      __publicField(this, "view");
      __publicField(this, "bytes");
      __publicField(this, "entered", false);
      this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
      this.context = options?.context;
      this.useBigInt64 = options?.useBigInt64 ?? false;
      this.maxDepth = options?.maxDepth ?? DEFAULT_MAX_DEPTH;
      this.initialBufferSize = options?.initialBufferSize ?? DEFAULT_INITIAL_BUFFER_SIZE;
      this.sortKeys = options?.sortKeys ?? false;
      this.forceFloat32 = options?.forceFloat32 ?? false;
      this.ignoreUndefined = options?.ignoreUndefined ?? false;
      this.forceIntegerToFloat = options?.forceIntegerToFloat ?? false;
      this.pos = 0;
      this.view = new DataView(new ArrayBuffer(this.initialBufferSize));
      this.bytes = new Uint8Array(this.view.buffer);
    }
    clone() {
      return new _Encoder({
        extensionCodec: this.extensionCodec,
        context: this.context,
        useBigInt64: this.useBigInt64,
        maxDepth: this.maxDepth,
        initialBufferSize: this.initialBufferSize,
        sortKeys: this.sortKeys,
        forceFloat32: this.forceFloat32,
        ignoreUndefined: this.ignoreUndefined,
        forceIntegerToFloat: this.forceIntegerToFloat
      });
    }
    reinitializeState() {
      this.pos = 0;
    }
    /**
     * This is almost equivalent to {@link Encoder#encode}, but it returns an reference of the encoder's internal buffer and thus much faster than {@link Encoder#encode}.
     *
     * @returns Encodes the object and returns a shared reference the encoder's internal buffer.
     */
    encodeSharedRef(object) {
      if (this.entered) {
        const instance = this.clone();
        return instance.encodeSharedRef(object);
      }
      try {
        this.entered = true;
        this.reinitializeState();
        this.doEncode(object, 1);
        return this.bytes.subarray(0, this.pos);
      } finally {
        this.entered = false;
      }
    }
    /**
     * @returns Encodes the object and returns a copy of the encoder's internal buffer.
     */
    encode(object) {
      if (this.entered) {
        const instance = this.clone();
        return instance.encode(object);
      }
      try {
        this.entered = true;
        this.reinitializeState();
        this.doEncode(object, 1);
        return this.bytes.slice(0, this.pos);
      } finally {
        this.entered = false;
      }
    }
    doEncode(object, depth) {
      if (depth > this.maxDepth) {
        throw new Error(`Too deep objects in depth ${depth}`);
      }
      if (object == null) {
        this.encodeNil();
      } else if (typeof object === "boolean") {
        this.encodeBoolean(object);
      } else if (typeof object === "number") {
        if (!this.forceIntegerToFloat) {
          this.encodeNumber(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      } else if (typeof object === "string") {
        this.encodeString(object);
      } else if (this.useBigInt64 && typeof object === "bigint") {
        this.encodeBigInt64(object);
      } else {
        this.encodeObject(object, depth);
      }
    }
    ensureBufferSizeToWrite(sizeToWrite) {
      const requiredSize = this.pos + sizeToWrite;
      if (this.view.byteLength < requiredSize) {
        this.resizeBuffer(requiredSize * 2);
      }
    }
    resizeBuffer(newSize) {
      const newBuffer = new ArrayBuffer(newSize);
      const newBytes = new Uint8Array(newBuffer);
      const newView = new DataView(newBuffer);
      newBytes.set(this.bytes);
      this.view = newView;
      this.bytes = newBytes;
    }
    encodeNil() {
      this.writeU8(192);
    }
    encodeBoolean(object) {
      if (object === false) {
        this.writeU8(194);
      } else {
        this.writeU8(195);
      }
    }
    encodeNumber(object) {
      if (!this.forceIntegerToFloat && Number.isSafeInteger(object)) {
        if (object >= 0) {
          if (object < 128) {
            this.writeU8(object);
          } else if (object < 256) {
            this.writeU8(204);
            this.writeU8(object);
          } else if (object < 65536) {
            this.writeU8(205);
            this.writeU16(object);
          } else if (object < 4294967296) {
            this.writeU8(206);
            this.writeU32(object);
          } else if (!this.useBigInt64) {
            this.writeU8(207);
            this.writeU64(object);
          } else {
            this.encodeNumberAsFloat(object);
          }
        } else {
          if (object >= -32) {
            this.writeU8(224 | object + 32);
          } else if (object >= -128) {
            this.writeU8(208);
            this.writeI8(object);
          } else if (object >= -32768) {
            this.writeU8(209);
            this.writeI16(object);
          } else if (object >= -2147483648) {
            this.writeU8(210);
            this.writeI32(object);
          } else if (!this.useBigInt64) {
            this.writeU8(211);
            this.writeI64(object);
          } else {
            this.encodeNumberAsFloat(object);
          }
        }
      } else {
        this.encodeNumberAsFloat(object);
      }
    }
    encodeNumberAsFloat(object) {
      if (this.forceFloat32) {
        this.writeU8(202);
        this.writeF32(object);
      } else {
        this.writeU8(203);
        this.writeF64(object);
      }
    }
    encodeBigInt64(object) {
      if (object >= BigInt(0)) {
        this.writeU8(207);
        this.writeBigUint64(object);
      } else {
        this.writeU8(211);
        this.writeBigInt64(object);
      }
    }
    writeStringHeader(byteLength) {
      if (byteLength < 32) {
        this.writeU8(160 + byteLength);
      } else if (byteLength < 256) {
        this.writeU8(217);
        this.writeU8(byteLength);
      } else if (byteLength < 65536) {
        this.writeU8(218);
        this.writeU16(byteLength);
      } else if (byteLength < 4294967296) {
        this.writeU8(219);
        this.writeU32(byteLength);
      } else {
        throw new Error(`Too long string: ${byteLength} bytes in UTF-8`);
      }
    }
    encodeString(object) {
      const maxHeaderSize = 1 + 4;
      const byteLength = utf8Count(object);
      this.ensureBufferSizeToWrite(maxHeaderSize + byteLength);
      this.writeStringHeader(byteLength);
      utf8Encode(object, this.bytes, this.pos);
      this.pos += byteLength;
    }
    encodeObject(object, depth) {
      const ext = this.extensionCodec.tryToEncode(object, this.context);
      if (ext != null) {
        this.encodeExtension(ext);
      } else if (Array.isArray(object)) {
        this.encodeArray(object, depth);
      } else if (ArrayBuffer.isView(object)) {
        this.encodeBinary(object);
      } else if (typeof object === "object") {
        this.encodeMap(object, depth);
      } else {
        throw new Error(`Unrecognized object: ${Object.prototype.toString.apply(object)}`);
      }
    }
    encodeBinary(object) {
      const size = object.byteLength;
      if (size < 256) {
        this.writeU8(196);
        this.writeU8(size);
      } else if (size < 65536) {
        this.writeU8(197);
        this.writeU16(size);
      } else if (size < 4294967296) {
        this.writeU8(198);
        this.writeU32(size);
      } else {
        throw new Error(`Too large binary: ${size}`);
      }
      const bytes = ensureUint8Array(object);
      this.writeU8a(bytes);
    }
    encodeArray(object, depth) {
      const size = object.length;
      if (size < 16) {
        this.writeU8(144 + size);
      } else if (size < 65536) {
        this.writeU8(220);
        this.writeU16(size);
      } else if (size < 4294967296) {
        this.writeU8(221);
        this.writeU32(size);
      } else {
        throw new Error(`Too large array: ${size}`);
      }
      for (const item of object) {
        this.doEncode(item, depth + 1);
      }
    }
    countWithoutUndefined(object, keys) {
      let count = 0;
      for (const key of keys) {
        if (object[key] !== void 0) {
          count++;
        }
      }
      return count;
    }
    encodeMap(object, depth) {
      const keys = Object.keys(object);
      if (this.sortKeys) {
        keys.sort();
      }
      const size = this.ignoreUndefined ? this.countWithoutUndefined(object, keys) : keys.length;
      if (size < 16) {
        this.writeU8(128 + size);
      } else if (size < 65536) {
        this.writeU8(222);
        this.writeU16(size);
      } else if (size < 4294967296) {
        this.writeU8(223);
        this.writeU32(size);
      } else {
        throw new Error(`Too large map object: ${size}`);
      }
      for (const key of keys) {
        const value = object[key];
        if (!(this.ignoreUndefined && value === void 0)) {
          this.encodeString(key);
          this.doEncode(value, depth + 1);
        }
      }
    }
    encodeExtension(ext) {
      if (typeof ext.data === "function") {
        const data = ext.data(this.pos + 6);
        const size2 = data.length;
        if (size2 >= 4294967296) {
          throw new Error(`Too large extension object: ${size2}`);
        }
        this.writeU8(201);
        this.writeU32(size2);
        this.writeI8(ext.type);
        this.writeU8a(data);
        return;
      }
      const size = ext.data.length;
      if (size === 1) {
        this.writeU8(212);
      } else if (size === 2) {
        this.writeU8(213);
      } else if (size === 4) {
        this.writeU8(214);
      } else if (size === 8) {
        this.writeU8(215);
      } else if (size === 16) {
        this.writeU8(216);
      } else if (size < 256) {
        this.writeU8(199);
        this.writeU8(size);
      } else if (size < 65536) {
        this.writeU8(200);
        this.writeU16(size);
      } else if (size < 4294967296) {
        this.writeU8(201);
        this.writeU32(size);
      } else {
        throw new Error(`Too large extension object: ${size}`);
      }
      this.writeI8(ext.type);
      this.writeU8a(ext.data);
    }
    writeU8(value) {
      this.ensureBufferSizeToWrite(1);
      this.view.setUint8(this.pos, value);
      this.pos++;
    }
    writeU8a(values) {
      const size = values.length;
      this.ensureBufferSizeToWrite(size);
      this.bytes.set(values, this.pos);
      this.pos += size;
    }
    writeI8(value) {
      this.ensureBufferSizeToWrite(1);
      this.view.setInt8(this.pos, value);
      this.pos++;
    }
    writeU16(value) {
      this.ensureBufferSizeToWrite(2);
      this.view.setUint16(this.pos, value);
      this.pos += 2;
    }
    writeI16(value) {
      this.ensureBufferSizeToWrite(2);
      this.view.setInt16(this.pos, value);
      this.pos += 2;
    }
    writeU32(value) {
      this.ensureBufferSizeToWrite(4);
      this.view.setUint32(this.pos, value);
      this.pos += 4;
    }
    writeI32(value) {
      this.ensureBufferSizeToWrite(4);
      this.view.setInt32(this.pos, value);
      this.pos += 4;
    }
    writeF32(value) {
      this.ensureBufferSizeToWrite(4);
      this.view.setFloat32(this.pos, value);
      this.pos += 4;
    }
    writeF64(value) {
      this.ensureBufferSizeToWrite(8);
      this.view.setFloat64(this.pos, value);
      this.pos += 8;
    }
    writeU64(value) {
      this.ensureBufferSizeToWrite(8);
      setUint64(this.view, this.pos, value);
      this.pos += 8;
    }
    writeI64(value) {
      this.ensureBufferSizeToWrite(8);
      setInt64(this.view, this.pos, value);
      this.pos += 8;
    }
    writeBigUint64(value) {
      this.ensureBufferSizeToWrite(8);
      this.view.setBigUint64(this.pos, value);
      this.pos += 8;
    }
    writeBigInt64(value) {
      this.ensureBufferSizeToWrite(8);
      this.view.setBigInt64(this.pos, value);
      this.pos += 8;
    }
  };

  // node_modules/@msgpack/msgpack/dist.esm/utils/prettyByte.mjs
  function prettyByte(byte) {
    return `${byte < 0 ? "-" : ""}0x${Math.abs(byte).toString(16).padStart(2, "0")}`;
  }

  // node_modules/@msgpack/msgpack/dist.esm/CachedKeyDecoder.mjs
  var DEFAULT_MAX_KEY_LENGTH = 16;
  var DEFAULT_MAX_LENGTH_PER_KEY = 16;
  var CachedKeyDecoder = class {
    constructor(maxKeyLength = DEFAULT_MAX_KEY_LENGTH, maxLengthPerKey = DEFAULT_MAX_LENGTH_PER_KEY) {
      __publicField(this, "hit", 0);
      __publicField(this, "miss", 0);
      __publicField(this, "caches");
      __publicField(this, "maxKeyLength");
      __publicField(this, "maxLengthPerKey");
      this.maxKeyLength = maxKeyLength;
      this.maxLengthPerKey = maxLengthPerKey;
      this.caches = [];
      for (let i = 0; i < this.maxKeyLength; i++) {
        this.caches.push([]);
      }
    }
    canBeCached(byteLength) {
      return byteLength > 0 && byteLength <= this.maxKeyLength;
    }
    find(bytes, inputOffset, byteLength) {
      const records = this.caches[byteLength - 1];
      FIND_CHUNK: for (const record of records) {
        const recordBytes = record.bytes;
        for (let j = 0; j < byteLength; j++) {
          if (recordBytes[j] !== bytes[inputOffset + j]) {
            continue FIND_CHUNK;
          }
        }
        return record.str;
      }
      return null;
    }
    store(bytes, value) {
      const records = this.caches[bytes.length - 1];
      const record = { bytes, str: value };
      if (records.length >= this.maxLengthPerKey) {
        records[Math.random() * records.length | 0] = record;
      } else {
        records.push(record);
      }
    }
    decode(bytes, inputOffset, byteLength) {
      const cachedValue = this.find(bytes, inputOffset, byteLength);
      if (cachedValue != null) {
        this.hit++;
        return cachedValue;
      }
      this.miss++;
      const str2 = utf8DecodeJs(bytes, inputOffset, byteLength);
      const slicedCopyOfBytes = Uint8Array.prototype.slice.call(bytes, inputOffset, inputOffset + byteLength);
      this.store(slicedCopyOfBytes, str2);
      return str2;
    }
  };

  // node_modules/@msgpack/msgpack/dist.esm/Decoder.mjs
  var STATE_ARRAY = "array";
  var STATE_MAP_KEY = "map_key";
  var STATE_MAP_VALUE = "map_value";
  var mapKeyConverter = (key) => {
    if (typeof key === "string" || typeof key === "number") {
      return key;
    }
    throw new DecodeError("The type of key must be string or number but " + typeof key);
  };
  var StackPool = class {
    constructor() {
      __publicField(this, "stack", []);
      __publicField(this, "stackHeadPosition", -1);
    }
    get length() {
      return this.stackHeadPosition + 1;
    }
    top() {
      return this.stack[this.stackHeadPosition];
    }
    pushArrayState(size) {
      const state = this.getUninitializedStateFromPool();
      state.type = STATE_ARRAY;
      state.position = 0;
      state.size = size;
      state.array = new Array(size);
    }
    pushMapState(size) {
      const state = this.getUninitializedStateFromPool();
      state.type = STATE_MAP_KEY;
      state.readCount = 0;
      state.size = size;
      state.map = {};
    }
    getUninitializedStateFromPool() {
      this.stackHeadPosition++;
      if (this.stackHeadPosition === this.stack.length) {
        const partialState = {
          type: void 0,
          size: 0,
          array: void 0,
          position: 0,
          readCount: 0,
          map: void 0,
          key: null
        };
        this.stack.push(partialState);
      }
      return this.stack[this.stackHeadPosition];
    }
    release(state) {
      const topStackState = this.stack[this.stackHeadPosition];
      if (topStackState !== state) {
        throw new Error("Invalid stack state. Released state is not on top of the stack.");
      }
      if (state.type === STATE_ARRAY) {
        const partialState = state;
        partialState.size = 0;
        partialState.array = void 0;
        partialState.position = 0;
        partialState.type = void 0;
      }
      if (state.type === STATE_MAP_KEY || state.type === STATE_MAP_VALUE) {
        const partialState = state;
        partialState.size = 0;
        partialState.map = void 0;
        partialState.readCount = 0;
        partialState.type = void 0;
      }
      this.stackHeadPosition--;
    }
    reset() {
      this.stack.length = 0;
      this.stackHeadPosition = -1;
    }
  };
  var HEAD_BYTE_REQUIRED = -1;
  var EMPTY_VIEW = new DataView(new ArrayBuffer(0));
  var EMPTY_BYTES = new Uint8Array(EMPTY_VIEW.buffer);
  try {
    EMPTY_VIEW.getInt8(0);
  } catch (e) {
    if (!(e instanceof RangeError)) {
      throw new Error("This module is not supported in the current JavaScript engine because DataView does not throw RangeError on out-of-bounds access");
    }
  }
  var MORE_DATA = new RangeError("Insufficient data");
  var sharedCachedKeyDecoder = new CachedKeyDecoder();
  var Decoder = class _Decoder {
    constructor(options) {
      __publicField(this, "extensionCodec");
      __publicField(this, "context");
      __publicField(this, "useBigInt64");
      __publicField(this, "rawStrings");
      __publicField(this, "maxStrLength");
      __publicField(this, "maxBinLength");
      __publicField(this, "maxArrayLength");
      __publicField(this, "maxMapLength");
      __publicField(this, "maxExtLength");
      __publicField(this, "keyDecoder");
      __publicField(this, "mapKeyConverter");
      __publicField(this, "totalPos", 0);
      __publicField(this, "pos", 0);
      __publicField(this, "view", EMPTY_VIEW);
      __publicField(this, "bytes", EMPTY_BYTES);
      __publicField(this, "headByte", HEAD_BYTE_REQUIRED);
      __publicField(this, "stack", new StackPool());
      __publicField(this, "entered", false);
      this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
      this.context = options?.context;
      this.useBigInt64 = options?.useBigInt64 ?? false;
      this.rawStrings = options?.rawStrings ?? false;
      this.maxStrLength = options?.maxStrLength ?? UINT32_MAX;
      this.maxBinLength = options?.maxBinLength ?? UINT32_MAX;
      this.maxArrayLength = options?.maxArrayLength ?? UINT32_MAX;
      this.maxMapLength = options?.maxMapLength ?? UINT32_MAX;
      this.maxExtLength = options?.maxExtLength ?? UINT32_MAX;
      this.keyDecoder = options?.keyDecoder !== void 0 ? options.keyDecoder : sharedCachedKeyDecoder;
      this.mapKeyConverter = options?.mapKeyConverter ?? mapKeyConverter;
    }
    clone() {
      return new _Decoder({
        extensionCodec: this.extensionCodec,
        context: this.context,
        useBigInt64: this.useBigInt64,
        rawStrings: this.rawStrings,
        maxStrLength: this.maxStrLength,
        maxBinLength: this.maxBinLength,
        maxArrayLength: this.maxArrayLength,
        maxMapLength: this.maxMapLength,
        maxExtLength: this.maxExtLength,
        keyDecoder: this.keyDecoder
      });
    }
    reinitializeState() {
      this.totalPos = 0;
      this.headByte = HEAD_BYTE_REQUIRED;
      this.stack.reset();
    }
    setBuffer(buffer) {
      const bytes = ensureUint8Array(buffer);
      this.bytes = bytes;
      this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      this.pos = 0;
    }
    appendBuffer(buffer) {
      if (this.headByte === HEAD_BYTE_REQUIRED && !this.hasRemaining(1)) {
        this.setBuffer(buffer);
      } else {
        const remainingData = this.bytes.subarray(this.pos);
        const newData = ensureUint8Array(buffer);
        const newBuffer = new Uint8Array(remainingData.length + newData.length);
        newBuffer.set(remainingData);
        newBuffer.set(newData, remainingData.length);
        this.setBuffer(newBuffer);
      }
    }
    hasRemaining(size) {
      return this.view.byteLength - this.pos >= size;
    }
    createExtraByteError(posToShow) {
      const { view, pos } = this;
      return new RangeError(`Extra ${view.byteLength - pos} of ${view.byteLength} byte(s) found at buffer[${posToShow}]`);
    }
    /**
     * @throws {@link DecodeError}
     * @throws {@link RangeError}
     */
    decode(buffer) {
      if (this.entered) {
        const instance = this.clone();
        return instance.decode(buffer);
      }
      try {
        this.entered = true;
        this.reinitializeState();
        this.setBuffer(buffer);
        const object = this.doDecodeSync();
        if (this.hasRemaining(1)) {
          throw this.createExtraByteError(this.pos);
        }
        return object;
      } finally {
        this.entered = false;
      }
    }
    *decodeMulti(buffer) {
      if (this.entered) {
        const instance = this.clone();
        yield* instance.decodeMulti(buffer);
        return;
      }
      try {
        this.entered = true;
        this.reinitializeState();
        this.setBuffer(buffer);
        while (this.hasRemaining(1)) {
          yield this.doDecodeSync();
        }
      } finally {
        this.entered = false;
      }
    }
    async decodeAsync(stream) {
      if (this.entered) {
        const instance = this.clone();
        return instance.decodeAsync(stream);
      }
      try {
        this.entered = true;
        let decoded = false;
        let object;
        for await (const buffer of stream) {
          if (decoded) {
            this.entered = false;
            throw this.createExtraByteError(this.totalPos);
          }
          this.appendBuffer(buffer);
          try {
            object = this.doDecodeSync();
            decoded = true;
          } catch (e) {
            if (!(e instanceof RangeError)) {
              throw e;
            }
          }
          this.totalPos += this.pos;
        }
        if (decoded) {
          if (this.hasRemaining(1)) {
            throw this.createExtraByteError(this.totalPos);
          }
          return object;
        }
        const { headByte, pos, totalPos } = this;
        throw new RangeError(`Insufficient data in parsing ${prettyByte(headByte)} at ${totalPos} (${pos} in the current buffer)`);
      } finally {
        this.entered = false;
      }
    }
    decodeArrayStream(stream) {
      return this.decodeMultiAsync(stream, true);
    }
    decodeStream(stream) {
      return this.decodeMultiAsync(stream, false);
    }
    async *decodeMultiAsync(stream, isArray) {
      if (this.entered) {
        const instance = this.clone();
        yield* instance.decodeMultiAsync(stream, isArray);
        return;
      }
      try {
        this.entered = true;
        let isArrayHeaderRequired = isArray;
        let arrayItemsLeft = -1;
        for await (const buffer of stream) {
          if (isArray && arrayItemsLeft === 0) {
            throw this.createExtraByteError(this.totalPos);
          }
          this.appendBuffer(buffer);
          if (isArrayHeaderRequired) {
            arrayItemsLeft = this.readArraySize();
            isArrayHeaderRequired = false;
            this.complete();
          }
          try {
            while (true) {
              yield this.doDecodeSync();
              if (--arrayItemsLeft === 0) {
                break;
              }
            }
          } catch (e) {
            if (!(e instanceof RangeError)) {
              throw e;
            }
          }
          this.totalPos += this.pos;
        }
      } finally {
        this.entered = false;
      }
    }
    doDecodeSync() {
      DECODE: while (true) {
        const headByte = this.readHeadByte();
        let object;
        if (headByte >= 224) {
          object = headByte - 256;
        } else if (headByte < 192) {
          if (headByte < 128) {
            object = headByte;
          } else if (headByte < 144) {
            const size = headByte - 128;
            if (size !== 0) {
              this.pushMapState(size);
              this.complete();
              continue DECODE;
            } else {
              object = {};
            }
          } else if (headByte < 160) {
            const size = headByte - 144;
            if (size !== 0) {
              this.pushArrayState(size);
              this.complete();
              continue DECODE;
            } else {
              object = [];
            }
          } else {
            const byteLength = headByte - 160;
            object = this.decodeString(byteLength, 0);
          }
        } else if (headByte === 192) {
          object = null;
        } else if (headByte === 194) {
          object = false;
        } else if (headByte === 195) {
          object = true;
        } else if (headByte === 202) {
          object = this.readF32();
        } else if (headByte === 203) {
          object = this.readF64();
        } else if (headByte === 204) {
          object = this.readU8();
        } else if (headByte === 205) {
          object = this.readU16();
        } else if (headByte === 206) {
          object = this.readU32();
        } else if (headByte === 207) {
          if (this.useBigInt64) {
            object = this.readU64AsBigInt();
          } else {
            object = this.readU64();
          }
        } else if (headByte === 208) {
          object = this.readI8();
        } else if (headByte === 209) {
          object = this.readI16();
        } else if (headByte === 210) {
          object = this.readI32();
        } else if (headByte === 211) {
          if (this.useBigInt64) {
            object = this.readI64AsBigInt();
          } else {
            object = this.readI64();
          }
        } else if (headByte === 217) {
          const byteLength = this.lookU8();
          object = this.decodeString(byteLength, 1);
        } else if (headByte === 218) {
          const byteLength = this.lookU16();
          object = this.decodeString(byteLength, 2);
        } else if (headByte === 219) {
          const byteLength = this.lookU32();
          object = this.decodeString(byteLength, 4);
        } else if (headByte === 220) {
          const size = this.readU16();
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else if (headByte === 221) {
          const size = this.readU32();
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else if (headByte === 222) {
          const size = this.readU16();
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte === 223) {
          const size = this.readU32();
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte === 196) {
          const size = this.lookU8();
          object = this.decodeBinary(size, 1);
        } else if (headByte === 197) {
          const size = this.lookU16();
          object = this.decodeBinary(size, 2);
        } else if (headByte === 198) {
          const size = this.lookU32();
          object = this.decodeBinary(size, 4);
        } else if (headByte === 212) {
          object = this.decodeExtension(1, 0);
        } else if (headByte === 213) {
          object = this.decodeExtension(2, 0);
        } else if (headByte === 214) {
          object = this.decodeExtension(4, 0);
        } else if (headByte === 215) {
          object = this.decodeExtension(8, 0);
        } else if (headByte === 216) {
          object = this.decodeExtension(16, 0);
        } else if (headByte === 199) {
          const size = this.lookU8();
          object = this.decodeExtension(size, 1);
        } else if (headByte === 200) {
          const size = this.lookU16();
          object = this.decodeExtension(size, 2);
        } else if (headByte === 201) {
          const size = this.lookU32();
          object = this.decodeExtension(size, 4);
        } else {
          throw new DecodeError(`Unrecognized type byte: ${prettyByte(headByte)}`);
        }
        this.complete();
        const stack = this.stack;
        while (stack.length > 0) {
          const state = stack.top();
          if (state.type === STATE_ARRAY) {
            state.array[state.position] = object;
            state.position++;
            if (state.position === state.size) {
              object = state.array;
              stack.release(state);
            } else {
              continue DECODE;
            }
          } else if (state.type === STATE_MAP_KEY) {
            if (object === "__proto__") {
              throw new DecodeError("The key __proto__ is not allowed");
            }
            state.key = this.mapKeyConverter(object);
            state.type = STATE_MAP_VALUE;
            continue DECODE;
          } else {
            state.map[state.key] = object;
            state.readCount++;
            if (state.readCount === state.size) {
              object = state.map;
              stack.release(state);
            } else {
              state.key = null;
              state.type = STATE_MAP_KEY;
              continue DECODE;
            }
          }
        }
        return object;
      }
    }
    readHeadByte() {
      if (this.headByte === HEAD_BYTE_REQUIRED) {
        this.headByte = this.readU8();
      }
      return this.headByte;
    }
    complete() {
      this.headByte = HEAD_BYTE_REQUIRED;
    }
    readArraySize() {
      const headByte = this.readHeadByte();
      switch (headByte) {
        case 220:
          return this.readU16();
        case 221:
          return this.readU32();
        default: {
          if (headByte < 160) {
            return headByte - 144;
          } else {
            throw new DecodeError(`Unrecognized array type byte: ${prettyByte(headByte)}`);
          }
        }
      }
    }
    pushMapState(size) {
      if (size > this.maxMapLength) {
        throw new DecodeError(`Max length exceeded: map length (${size}) > maxMapLengthLength (${this.maxMapLength})`);
      }
      this.stack.pushMapState(size);
    }
    pushArrayState(size) {
      if (size > this.maxArrayLength) {
        throw new DecodeError(`Max length exceeded: array length (${size}) > maxArrayLength (${this.maxArrayLength})`);
      }
      this.stack.pushArrayState(size);
    }
    decodeString(byteLength, headerOffset) {
      if (!this.rawStrings || this.stateIsMapKey()) {
        return this.decodeUtf8String(byteLength, headerOffset);
      }
      return this.decodeBinary(byteLength, headerOffset);
    }
    /**
     * @throws {@link RangeError}
     */
    decodeUtf8String(byteLength, headerOffset) {
      if (byteLength > this.maxStrLength) {
        throw new DecodeError(`Max length exceeded: UTF-8 byte length (${byteLength}) > maxStrLength (${this.maxStrLength})`);
      }
      if (this.bytes.byteLength < this.pos + headerOffset + byteLength) {
        throw MORE_DATA;
      }
      const offset = this.pos + headerOffset;
      let object;
      if (this.stateIsMapKey() && this.keyDecoder?.canBeCached(byteLength)) {
        object = this.keyDecoder.decode(this.bytes, offset, byteLength);
      } else {
        object = utf8Decode(this.bytes, offset, byteLength);
      }
      this.pos += headerOffset + byteLength;
      return object;
    }
    stateIsMapKey() {
      if (this.stack.length > 0) {
        const state = this.stack.top();
        return state.type === STATE_MAP_KEY;
      }
      return false;
    }
    /**
     * @throws {@link RangeError}
     */
    decodeBinary(byteLength, headOffset) {
      if (byteLength > this.maxBinLength) {
        throw new DecodeError(`Max length exceeded: bin length (${byteLength}) > maxBinLength (${this.maxBinLength})`);
      }
      if (!this.hasRemaining(byteLength + headOffset)) {
        throw MORE_DATA;
      }
      const offset = this.pos + headOffset;
      const object = this.bytes.subarray(offset, offset + byteLength);
      this.pos += headOffset + byteLength;
      return object;
    }
    decodeExtension(size, headOffset) {
      if (size > this.maxExtLength) {
        throw new DecodeError(`Max length exceeded: ext length (${size}) > maxExtLength (${this.maxExtLength})`);
      }
      const extType = this.view.getInt8(this.pos + headOffset);
      const data = this.decodeBinary(
        size,
        headOffset + 1
        /* extType */
      );
      return this.extensionCodec.decode(data, extType, this.context);
    }
    lookU8() {
      return this.view.getUint8(this.pos);
    }
    lookU16() {
      return this.view.getUint16(this.pos);
    }
    lookU32() {
      return this.view.getUint32(this.pos);
    }
    readU8() {
      const value = this.view.getUint8(this.pos);
      this.pos++;
      return value;
    }
    readI8() {
      const value = this.view.getInt8(this.pos);
      this.pos++;
      return value;
    }
    readU16() {
      const value = this.view.getUint16(this.pos);
      this.pos += 2;
      return value;
    }
    readI16() {
      const value = this.view.getInt16(this.pos);
      this.pos += 2;
      return value;
    }
    readU32() {
      const value = this.view.getUint32(this.pos);
      this.pos += 4;
      return value;
    }
    readI32() {
      const value = this.view.getInt32(this.pos);
      this.pos += 4;
      return value;
    }
    readU64() {
      const value = getUint64(this.view, this.pos);
      this.pos += 8;
      return value;
    }
    readI64() {
      const value = getInt64(this.view, this.pos);
      this.pos += 8;
      return value;
    }
    readU64AsBigInt() {
      const value = this.view.getBigUint64(this.pos);
      this.pos += 8;
      return value;
    }
    readI64AsBigInt() {
      const value = this.view.getBigInt64(this.pos);
      this.pos += 8;
      return value;
    }
    readF32() {
      const value = this.view.getFloat32(this.pos);
      this.pos += 4;
      return value;
    }
    readF64() {
      const value = this.view.getFloat64(this.pos);
      this.pos += 8;
      return value;
    }
  };

  // src/protocol/values.ts
  var B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  function base64(bytes) {
    let out = "";
    for (let i = 0; i < bytes.length; i += 3) {
      const a = bytes[i];
      const b = bytes[i + 1];
      const c = bytes[i + 2];
      out += B64[a >> 2] + B64[(a & 3) << 4 | (b ?? 0) >> 4];
      out += b === void 0 ? "=" : B64[(b & 15) << 2 | (c ?? 0) >> 6];
      out += c === void 0 ? "=" : B64[c & 63];
    }
    return out;
  }
  function mapKey(key) {
    if (typeof key === "string") return key;
    if (key === null || key === void 0) return "null";
    if (key instanceof Uint8Array) return base64(key);
    if (typeof key === "number" || typeof key === "bigint" || typeof key === "boolean") return String(key);
    try {
      return JSON.stringify(key, (_k, v) => typeof v === "bigint" ? v.toString() : v) ?? String(key);
    } catch {
      return String(key);
    }
  }
  function narrowInts(value) {
    if (typeof value === "bigint") {
      return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = narrowInts(value[i]);
    } else if (typeof value === "object" && value !== null && !(value instanceof Uint8Array)) {
      const record = value;
      for (const key of Object.keys(record)) record[key] = narrowInts(record[key]);
    }
    return value;
  }
  function u64(value, field) {
    if (typeof value === "bigint") {
      throw new PrecisionError(`${field} ${value} is above Number.MAX_SAFE_INTEGER`);
    }
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
      throw new ProtocolError(`${field} is not a uint64: ${String(value)}`);
    }
    if (!Number.isSafeInteger(value)) throw new PrecisionError(`${field} ${value} is above Number.MAX_SAFE_INTEGER`);
    return value;
  }
  function optU64(value, field) {
    return value === void 0 || value === null ? void 0 : u64(value, field);
  }
  function num(value, field) {
    if (typeof value === "number") return value;
    if (typeof value === "bigint") throw new PrecisionError(`${field} ${value} is above Number.MAX_SAFE_INTEGER`);
    throw new ProtocolError(`${field} is not a number: ${String(value)}`);
  }
  function str(value, field) {
    if (typeof value !== "string") throw new ProtocolError(`${field} is not a string`);
    return value;
  }
  function isMap(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
  }

  // src/protocol/codec.ts
  var encoder = new Encoder({ ignoreUndefined: true, useBigInt64: true });
  var PROTO_BYTES = [95, 95, 112, 114, 111, 116, 111, 95, 95];
  var PROTO_MARKER = Object.freeze({ key: "__proto__" });
  var PROTO_KEY = /* @__PURE__ */ Symbol("__proto__");
  var sawProto = false;
  var keyDecoder = {
    canBeCached: (byteLength) => byteLength === PROTO_BYTES.length,
    decode(bytes, at, byteLength) {
      if (PROTO_BYTES.every((b, i) => bytes[at + i] === b)) {
        sawProto = true;
        return PROTO_MARKER;
      }
      return utf8(bytes.subarray(at, at + byteLength));
    }
  };
  function utf8(bytes) {
    if (bytes.every((b) => b < 128)) return String.fromCharCode(...bytes);
    if (typeof TextDecoder !== "undefined") return new TextDecoder().decode(bytes);
    try {
      return decodeURIComponent(Array.from(bytes, (b) => `%${b.toString(16).padStart(2, "0")}`).join(""));
    } catch {
      return String.fromCharCode(...Array.from(bytes, (b) => b < 128 ? b : 65533));
    }
  }
  function dataKey(key) {
    const name = key === PROTO_MARKER ? "__proto__" : mapKey(key);
    if (name !== "__proto__") return name;
    sawProto = true;
    return PROTO_KEY;
  }
  function ownProto(value) {
    if (Array.isArray(value)) {
      value.forEach(ownProto);
    } else if (isMap(value)) {
      const record = value;
      if (Object.prototype.hasOwnProperty.call(record, PROTO_KEY)) {
        Object.defineProperty(record, "__proto__", {
          value: record[PROTO_KEY],
          enumerable: true,
          writable: true,
          configurable: true
        });
        delete record[PROTO_KEY];
      }
      for (const key of Object.keys(record)) ownProto(record[key]);
    }
  }
  var decoder = new Decoder({ useBigInt64: true, keyDecoder, mapKeyConverter: dataKey });
  var msgpackCodec = {
    name: "msgpack",
    subprotocol: MSGPACK_SUBPROTOCOL,
    binary: true,
    encode(messages) {
      const parts = messages.map((message) => encoder.encode(message));
      if (parts.length === 1) return parts[0];
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
      const out = [];
      let values;
      sawProto = false;
      try {
        values = decoder.decodeMulti(frame);
        for (const value of values) {
          if (!isMap(value)) throw new ProtocolError("a message that is not a map");
          out.push(value);
        }
      } catch (error) {
        if (error instanceof ProtocolError) throw error;
        throw new ProtocolError(`a frame that does not decode: ${error.message}`);
      }
      if (sawProto) out.forEach(ownProto);
      if (frame.includes(207) || frame.includes(211)) out.forEach(narrowInts);
      return out;
    }
  };
  var jsonCodec = {
    name: "json",
    subprotocol: JSON_SUBPROTOCOL,
    binary: false,
    encode(messages) {
      return messages.map(toJSON).join("\n");
    },
    decode(frame) {
      const text = typeof frame === "string" ? frame : new TextDecoder().decode(frame);
      const out = [];
      for (const line of text.split("\n")) {
        if (line.trim() === "") continue;
        let value;
        try {
          value = /\d{16}/.test(line) ? parseJSON(line) : JSON.parse(line);
        } catch (error) {
          throw new ProtocolError(`a line that is not JSON: ${error.message}`);
        }
        if (!isMap(value)) throw new ProtocolError("a message that is not a map");
        out.push(value);
      }
      return out;
    }
  };
  function codecFor(name) {
    if (name === "msgpack") return msgpackCodec;
    if (name === "json") return jsonCodec;
    throw new TypeError(`codec must be "msgpack" or "json", got ${String(name)}`);
  }
  function toJSON(value) {
    if (value === null || value === void 0) return "null";
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
    if (typeof value.toJSON === "function") {
      return toJSON(value.toJSON());
    }
    const parts = [];
    for (const [key, item] of Object.entries(value)) {
      if (item === void 0 || typeof item === "function" || typeof item === "symbol") continue;
      parts.push(`${JSON.stringify(key)}:${toJSON(item)}`);
    }
    return `{${parts.join(",")}}`;
  }
  var NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
  var STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
  function parseJSON(text) {
    let i = 0;
    const fail = () => {
      throw new SyntaxError(`unexpected input at ${i}`);
    };
    const ws = () => {
      while (i < text.length && " 	\r\n".includes(text[i])) i++;
    };
    const value = () => {
      ws();
      const c = text[i];
      if (c === "{") {
        i++;
        const obj = {};
        ws();
        if (text[i] === "}") {
          i++;
          return obj;
        }
        for (; ; ) {
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
        const arr = [];
        ws();
        if (text[i] === "]") {
          i++;
          return arr;
        }
        for (; ; ) {
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
        if (m[1] === void 0 && m[2] === void 0) {
          const n = Number(m[0]);
          return Number.isSafeInteger(n) ? n : BigInt(m[0]);
        }
        return Number(m[0]);
      }
      for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
        if (text.startsWith(word, i)) {
          i += word.length;
          return v;
        }
      }
      return fail();
    };
    const string = () => {
      STRING.lastIndex = i;
      const m = STRING.exec(text);
      if (!m) return fail();
      i += m[0].length;
      return JSON.parse(m[0]);
    };
    const result = value();
    ws();
    if (i !== text.length) fail();
    return result;
  }

  // src/protocol/messages.ts
  function readMessage(wire, channel) {
    const message = {
      channel: channel ?? str(wire["channel"], "channel"),
      data: wire["data"] ?? null,
      offset: u64(wire["offset"], "offset"),
      epoch: str(wire["epoch"], "epoch")
    };
    if (typeof wire["mid"] === "string") message.mid = wire["mid"];
    if (wire["time"] !== void 0 && wire["time"] !== null) message.time = num(wire["time"], "time");
    const info = wire["info"];
    if (isMap(info)) {
      const sender = { user: String(info["user"] ?? ""), client: String(info["client"] ?? "") };
      if (info["info"] !== void 0 && info["info"] !== null) sender.info = info["info"];
      message.sender = sender;
    }
    return message;
  }
  function readSent(result) {
    const sent = { offset: u64(result["offset"], "offset"), epoch: str(result["epoch"], "epoch") };
    if (typeof result["mid"] === "string") sent.mid = result["mid"];
    if (result["time"] !== void 0 && result["time"] !== null) sent.time = num(result["time"], "time");
    return sent;
  }
  function readStatus(wire) {
    if (!isMap(wire)) throw new ProtocolError("a status that is not a map");
    return {
      user: str(wire["user"], "user"),
      online: wire["online"] === true,
      lastSeen: wire["last_seen"] === void 0 ? 0 : num(wire["last_seen"], "last_seen")
    };
  }
  function readSubscribe(result, channel) {
    const pubs = Array.isArray(result["publications"]) ? result["publications"] : [];
    const state = Array.isArray(result["state"]) ? result["state"] : [];
    const out = {
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
      full: result["full"] === true
    };
    if (isMap(result["status"])) out.status = readStatus(result["status"]);
    return out;
  }
  function readHistory(result, channel) {
    const pubs = Array.isArray(result["publications"]) ? result["publications"] : [];
    return {
      publications: pubs.map((p) => readMessage(isMap(p) ? p : {}, channel)),
      offset: u64(result["offset"], "offset"),
      epoch: str(result["epoch"], "epoch"),
      truncated: result["truncated"] === true
    };
  }

  // src/protocol/mergePatch.ts
  function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
  }
  function applyMergePatch(target, patch) {
    if (!isObject(patch)) return patch;
    const result = isObject(target) ? { ...target } : {};
    for (const [key, value] of Object.entries(patch)) {
      if (value === null) {
        delete result[key];
      } else {
        const current = Object.prototype.hasOwnProperty.call(result, key) ? result[key] : void 0;
        Object.defineProperty(result, key, {
          value: applyMergePatch(current, value),
          enumerable: true,
          writable: true,
          configurable: true
        });
      }
    }
    return result;
  }
  function sameValue(a, b) {
    if (a === b) return true;
    if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
    if (a instanceof Uint8Array || b instanceof Uint8Array) {
      if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
      return a.every((byte, i) => byte === b[i]);
    }
    if (Array.isArray(a) || Array.isArray(b)) {
      if (!(Array.isArray(a) && Array.isArray(b)) || a.length !== b.length) return false;
      return a.every((item, i) => sameValue(item, b[i]));
    }
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    if (ka.length !== kb.length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameValue(a[k], b[k]));
  }

  // src/protocol/liveState.ts
  var MAX_AHEAD = 256;
  var LiveState = class {
    constructor() {
      /** Every change up to this state version is in `values`. */
      this.version = 0;
      this.values = /* @__PURE__ */ new Map();
      this.keyVersions = /* @__PURE__ */ new Map();
      this.ahead = /* @__PURE__ */ new Set();
    }
    /** The version that set `key` (0 when absent): what a conditional write of it expects. */
    keyVersion(key) {
      return this.values.has(key) ? this.keyVersions.get(key) ?? 0 : 0;
    }
    /**
     * A subscribe reply's state at `version`: all keys, or (when `asked` is a version) those changed after it.
     * A reply below `asked`, or `full`, replaces everything. Changes are returned only with `announce`.
     */
    applySnapshot(version, entries, asked, announce, full) {
      const changes = [];
      if (asked === void 0 || version < asked || full) {
        const old = new Map(this.values);
        this.values.clear();
        this.keyVersions.clear();
        this.ahead.clear();
        for (const { key, value, version: at } of entries) {
          if (value === null) continue;
          this.values.set(key, value);
          this.keyVersions.set(key, at);
          if (announce && !(old.has(key) && sameValue(old.get(key), value))) changes.push({ key, value, version: at });
        }
        if (announce) {
          for (const key of old.keys()) if (!this.values.has(key)) changes.push({ key, value: null, version });
        }
      } else {
        for (const { key, value, version: at } of entries) {
          if (at > (this.keyVersions.get(key) ?? 0)) changes.push(this.put(key, value, at));
        }
      }
      this.version = version;
      const ahead = [...this.ahead].filter((v) => v > this.version).sort((a, b) => a - b);
      this.ahead = /* @__PURE__ */ new Set();
      for (const v of ahead) this.advance(v);
      for (const key of [...this.keyVersions.keys()]) if (!this.values.has(key)) this.keyVersions.delete(key);
      return changes;
    }
    /** One state push; returns its changes (none when stale), or null when a change was missed (resubscribe). */
    apply(key, version, push) {
      let value;
      if (push.patch !== void 0 && push.patch !== null) {
        if (version <= this.version) return [];
        if (version !== this.version + 1) return null;
        if ((this.keyVersions.get(key) ?? 0) >= version) {
          this.advance(version);
          return [];
        }
        value = applyMergePatch(this.values.get(key), push.patch);
      } else {
        if (version <= this.version || version <= (this.keyVersions.get(key) ?? 0)) return [];
        value = push.value ?? null;
      }
      const change = this.put(key, value, version);
      this.advance(version);
      if (value === null && version <= this.version) this.keyVersions.delete(key);
      return [change];
    }
    put(key, value, version) {
      if (value === null) this.values.delete(key);
      else this.values.set(key, value);
      this.keyVersions.set(key, version);
      return { key, value, version };
    }
    advance(v) {
      if (v === this.version + 1) {
        this.version = v;
        while (this.ahead.has(this.version + 1)) {
          this.ahead.delete(this.version + 1);
          this.version += 1;
        }
      } else if (v > this.version) {
        this.ahead.add(v);
        if (this.ahead.size > MAX_AHEAD) this.ahead.delete(Math.min(...this.ahead));
      }
    }
  };

  // src/subscription.ts
  var Subscription = class extends TypedEmitter {
    /** @internal */
    constructor(owner, channel, token, getToken) {
      super();
      this.owner = owner;
      this._offset = 0;
      this._epoch = "";
      this._recoverable = false;
      this._recovered = void 0;
      this.live = new LiveState();
      this.ended = false;
      this.readers = /* @__PURE__ */ new Set();
      /** @internal Confirmed once by the hub: from then on the client resubscribes it itself. */
      this._confirmed = false;
      this.channel = channel;
      this._token = token;
      this._getToken = getToken;
    }
    /** The offset of the last publication delivered (or where the stream stood at the last subscribe). */
    get offset() {
      return this._offset;
    }
    get epoch() {
      return this._epoch;
    }
    /** The channel keeps history: a recovery after a drop can work. */
    get recoverable() {
      return this._recoverable;
    }
    /** Whether the last resubscribe got back everything missed (undefined before any resubscribe). */
    get recovered() {
      return this._recovered;
    }
    /** Live channels: key → value, complete up to `version`. */
    get state() {
      return this.live.values;
    }
    get version() {
      return this.live.version;
    }
    /** Live channels: the version that set `key` (0 when absent), for a conditional write. */
    keyVersion(key) {
      return this.live.keyVersion(key);
    }
    /** Status channels: the user's status. */
    get status() {
      return this._status;
    }
    /** True once unsubscribed or ended by the hub or the client. */
    get closed() {
      return this.ended;
    }
    /** Stop receiving this channel; iteration ends after what is already buffered. */
    unsubscribe() {
      return this.owner.unsubscribeSub(this);
    }
    [Symbol.asyncIterator]() {
      const reader = { buffer: [], waiter: void 0 };
      if (!this.ended) this.readers.add(reader);
      let finished = false;
      const iterator = {
        next: () => {
          if (reader.buffer.length > 0) return Promise.resolve({ value: reader.buffer.shift(), done: false });
          if (this.ended || finished) {
            return this.endError && !finished ? Promise.reject(this.endError) : Promise.resolve({ value: void 0, done: true });
          }
          if (reader.waiter !== void 0) return Promise.reject(new TypeError("next() called again before the last one settled"));
          return new Promise((resolve, reject) => reader.waiter = { resolve, reject });
        },
        // The loop exited (break, return, throw): stop buffering for it.
        return: () => {
          finished = true;
          this.readers.delete(reader);
          reader.buffer = [];
          reader.waiter?.resolve({ value: void 0, done: true });
          reader.waiter = void 0;
          return Promise.resolve({ value: void 0, done: true });
        },
        [Symbol.asyncIterator]: () => iterator
      };
      return iterator;
    }
    // --- used by the client --------------------------------------------------
    /** @internal The position a resubscribe recovers from, once confirmed. */
    _position() {
      return this._confirmed ? { offset: this._offset, epoch: this._epoch } : void 0;
    }
    /** @internal Take one push of this channel; true when it shows a gap to heal. */
    _push(push) {
      if (this.ended) return false;
      if (this._held !== void 0) {
        this._held.push(push);
        return false;
      }
      return this.handle(push);
    }
    /** @internal A (re)subscribe reply: deliver recovered publications, apply state, then what was held. */
    _subscribed(result, since, asked) {
      const first = !this._confirmed;
      let gap = false;
      const held = this._held ?? [];
      this._held = void 0;
      if (first || !result.recovered) {
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
      if (result.status !== void 0) {
        if (!first && JSON.stringify(result.status) !== JSON.stringify(this._status)) this.emit("status", result.status);
        this._status = result.status;
      }
      this._confirmed = true;
      for (const push of held) {
        if (push["push"] === "pub" && push["epoch"] !== result.epoch && !(result.offset === 0 && result.epoch === "")) continue;
        gap = this.handle(push) || gap;
      }
      if (since !== void 0) this._recovered = result.recovered;
      this.emit("subscribed", { recovered: result.recovered, recoverable: result.recoverable });
      if (since !== void 0 && !result.recovered) this.emit("unrecovered", {});
      return gap;
    }
    /** @internal End the subscription: iterators end (with `error` if set), "unsubscribed" is emitted. */
    _end(reason, error) {
      if (this.ended) return;
      this.ended = true;
      this.endError = error;
      this._held = void 0;
      for (const reader of this.readers) {
        const waiter = reader.waiter;
        reader.waiter = void 0;
        if (waiter && error) waiter.reject(error);
        else waiter?.resolve({ value: void 0, done: true });
      }
      this.readers.clear();
      this.emit("unsubscribed", { reason });
    }
    handle(push) {
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
          const event = { user: String(push["user"] ?? "") };
          if (push["info"] !== void 0 && push["info"] !== null) event.info = push["info"];
          this.emit("join", event);
          return false;
        }
        case "leave":
          this.emit("leave", { user: String(push["user"] ?? "") });
          return false;
        case "typing": {
          const event = {
            user: String(push["user"] ?? ""),
            typing: push["typing"] !== false
          };
          if (typeof push["timeout"] === "number") event.timeout = Math.round(push["timeout"] * 1e3);
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
          return false;
      }
    }
    /** Deliver one publication in order; false when it shows a gap (it is not delivered). */
    deliver(message) {
      const unstarted = this._offset === 0 && this._epoch === "";
      if (message.epoch === this._epoch) {
        if (message.offset <= this._offset) return true;
        if (message.offset > this._offset + 1 && this._confirmed) return false;
      } else if (!unstarted && this._confirmed) {
        this._recovered = false;
        this.emit("unrecovered", {});
      }
      this._offset = message.offset;
      this._epoch = message.epoch;
      this.emit("publication", message);
      for (const reader of this.readers) {
        const waiter = reader.waiter;
        reader.waiter = void 0;
        if (waiter) waiter.resolve({ value: message, done: false });
        else reader.buffer.push(message);
      }
      return true;
    }
  };

  // src/client.ts
  var VERSION = "0.1.0";
  var PUBLISH_ATTEMPTS = 3;
  var PUBLISH_RETRY_DELAY = 200;
  var TYPING_INTERVAL = 1e3;
  var PROBE_TIMEOUT = 5e3;
  var AUTH_ERRORS = /* @__PURE__ */ new Set([ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.PERMISSION_DENIED]);
  function newPublishKey() {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const bytes = new Uint8Array(22);
    const crypto = globalThis.crypto;
    if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
    else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    let out = "";
    for (const byte of bytes) out += alphabet[byte & 63];
    return out;
  }
  function abortReason(signal) {
    const error = new AbortError();
    error.cause = signal.reason;
    return error;
  }
  var Client = class extends TypedEmitter {
    constructor(url, options = {}) {
      super();
      /** The token must come from getToken before the next connect (109/4007). */
      this.tokenStale = false;
      this._state = "idle";
      this._clientId = "";
      this._user = "";
      /** The hub's ping interval (ms). */
      this.pingInterval = 25e3;
      this.expires = 0;
      this.nextId = 0;
      this.pending = /* @__PURE__ */ new Map();
      this.waiting = [];
      this.subs = /* @__PURE__ */ new Map();
      this.attempt = 0;
      this.handshakeFailed = false;
      this.connectWaiters = [];
      this.timers = /* @__PURE__ */ new Set();
      this.typingUntil = /* @__PURE__ */ new Map();
      this.onOnline = () => this.networkChanged();
      this.disconnects = /* @__PURE__ */ new Map();
      /** Commands refused with 110, each waiting for its advice to pass. */
      this.busy = [];
      /** Channels whose subscribe is still under way though the app unsubscribed: settled once it is undone. */
      this.leaving = /* @__PURE__ */ new Map();
      this.subTokenAborts = /* @__PURE__ */ new Set();
      this.subOwner = { unsubscribeSub: (sub) => this.unsubscribeSub(sub) };
      this.url = url;
      this.codec = codecFor(options.codec ?? "msgpack");
      const WS = options.WebSocket ?? globalThis.WebSocket;
      if (WS === void 0) {
        throw new TypeError("no WebSocket implementation: pass one as options.WebSocket (in Node: the ws package)");
      }
      this.WebSocketImpl = WS;
      this.token = options.token;
      this.getToken = options.getToken;
      this.connectData = options.data;
      this.options = {
        commandTimeout: options.commandTimeout ?? 1e4,
        minBackoff: options.minBackoff ?? 500,
        maxBackoff: options.maxBackoff ?? 2e4,
        name: options.name ?? "js",
        version: options.version ?? VERSION,
        batchCommands: options.batchCommands ?? true
      };
    }
    get state() {
      return this._state;
    }
    /** The connection id of the current (or last) connection. */
    get clientId() {
      return this._clientId;
    }
    /** The user of the connection ("" when anonymous). */
    get user() {
      return this._user;
    }
    get subscriptions() {
      return this.subs;
    }
    // --- lifecycle -------------------------------------------------------------
    /**
     * Connect; resolves on the first connect reply. Retryable failures (hub unreachable, 4000-4499) are retried
     * with backoff meanwhile; rejects with ConnectionClosed on a terminal refusal (4500-4999, a bad token), or when
     * `signal` aborts (the client keeps trying then: call close() to stop it).
     */
    connect(options = {}) {
      if (this._state === "closed") return Promise.reject(this.closedError);
      if (this._state === "connected") return Promise.resolve();
      const promise = new Promise((resolve, reject) => {
        const signal = options.signal;
        if (signal?.aborted) return reject(abortReason(signal));
        const onAbort = () => {
          this.connectWaiters = this.connectWaiters.filter((w) => w !== waiter);
          reject(abortReason(signal));
        };
        const waiter = {
          resolve: () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          },
          reject: (error) => {
            signal?.removeEventListener("abort", onAbort);
            reject(error);
          }
        };
        this.connectWaiters.push(waiter);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
      if (this._state === "idle") {
        const target = globalThis;
        if (target.window !== void 0 && typeof target.addEventListener === "function") {
          target.addEventListener("online", this.onOnline);
        }
        this.open();
      }
      return promise;
    }
    /** Close for good: pending commands reject with ConnectionClosed, subscriptions end. */
    close() {
      this.stop(new ConnectionClosed(1e3, "client closed"), true);
    }
    /** The app went to the background: close the socket (1000), keep subscriptions, stop every timer. */
    pause() {
      if (this._state === "closed" || this._state === "paused" || this._state === "idle") return;
      this.setState("paused");
      this.clearTimers();
      this.waiting.push(...this.busy.splice(0).filter((req) => !req.done));
      const conn = this.conn ?? this.opening;
      if (conn) conn.close(1e3, "paused");
      for (const req of this.waiting) this.stopTimers(req);
    }
    /** The app is back: reconnect now and resubscribe with recovery. */
    resume() {
      if (this._state !== "paused") return;
      const now = Date.now();
      for (const req of this.waiting) this.armTimeout(req, now + this.options.commandTimeout);
      this.attempt = 0;
      this.open();
    }
    /**
     * The network changed (NetInfo, `online`): reconnect at once with the backoff reset. A connection that looks
     * open is probed with a ping first, and replaced when nothing arrives within 5 s.
     */
    networkChanged() {
      if (this._state === "connecting" && this.reconnectTimer !== void 0) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = void 0;
        this.attempt = 0;
        this.advice = void 0;
        this.open();
      } else if (this._state === "connected" && this.conn) {
        const conn = this.conn;
        const sent = Date.now();
        this.call({ cmd: "ping" }, { retry: false, whenBusy: false }).catch(() => void 0);
        this.later(() => {
          if (this.conn === conn && conn.lastReceived < sent) {
            this.attempt = 0;
            conn.close(1e3, "no answer after a network change");
          }
        }, PROBE_TIMEOUT);
      }
    }
    setState(state) {
      if (this._state === state) return;
      this._state = state;
      this.emit("state", { state });
    }
    clearTimers() {
      for (const timer of [this.reconnectTimer, this.aliveTimer, this.refreshTimer, ...this.timers]) {
        if (timer !== void 0) clearTimeout(timer);
      }
      this.reconnectTimer = this.aliveTimer = this.refreshTimer = void 0;
      this.timers.clear();
      this.tokenAbort?.abort();
      this.tokenAbort = void 0;
    }
    /** A one-shot timer that pause() and close() clear. */
    later(fn, ms) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        fn();
      }, ms);
      this.timers.add(timer);
    }
    stop(error, byApp = false) {
      if (this._state === "closed") return;
      this.closedError = error;
      this.clearTimers();
      for (const abort of this.subTokenAborts) abort.abort();
      this.subTokenAborts.clear();
      const target = globalThis;
      target.removeEventListener?.("online", this.onOnline);
      this.setState("closed");
      for (const req of [...this.waiting.splice(0), ...this.busy.splice(0)]) this.finish(req, error);
      for (const [, requests] of this.pending) for (const req of [...requests.values()]) this.finish(req, error);
      for (const conn of [this.conn, this.opening]) conn?.close(1e3, "client closed");
      this.conn = this.opening = void 0;
      this.pending.clear();
      for (const sub of this.subs.values()) sub._end(byApp ? "closed" : error.reason || "closed", byApp ? void 0 : error);
      this.subs.clear();
      for (const waiter of this.connectWaiters.splice(0)) waiter.reject(error);
      this.emit("closed", { code: error.code, reason: error.reason });
    }
    // --- connecting ------------------------------------------------------------
    open() {
      if (this._state === "closed") return;
      this.setState("connecting");
      const needToken = this.getToken !== void 0 && (this.token === void 0 || this.tokenStale);
      if (!needToken) {
        this.openSocket();
        return;
      }
      this.fetchToken().then(
        () => this.openSocket(),
        (error) => {
          if (this._state !== "connecting") return;
          this.emit("error", { error: new RealtimeError(`getToken failed: ${String(error)}`) });
          this.scheduleReconnect();
        }
      );
    }
    async fetchToken() {
      this.tokenAbort?.abort();
      const abort = this.tokenAbort = new AbortController();
      const token = await this.getToken(abort.signal);
      if (abort.signal.aborted) throw new AbortError("token request cancelled");
      this.token = token;
      this.tokenStale = false;
    }
    openSocket() {
      if (this._state !== "connecting" || this.opening !== void 0) return;
      let conn;
      try {
        conn = new Connection(this.url, this.codec, this.WebSocketImpl, {
          open: (c) => this.opened(c),
          message: (c, message) => this.received(c, message),
          close: (c, code, reason) => this.dropped(c, code, reason),
          invalid: (_c, error) => this.emit("error", { error })
        }, this.options.batchCommands);
      } catch (error) {
        this.stop(new ConnectionClosed(CloseCode.BAD_REQUEST, `cannot open a WebSocket to ${this.url}: ${String(error?.message ?? error)}`));
        return;
      }
      this.opening = conn;
      this.pending.set(conn, /* @__PURE__ */ new Map());
    }
    opened(conn) {
      if (conn.ws.protocol && conn.ws.protocol !== this.codec.subprotocol) {
        conn.close(1e3, "subprotocol not accepted");
        return;
      }
      this.sendConnect(conn, false);
      this.later(() => {
        if (this.opening === conn) conn.close(1e3, "no connect reply");
      }, this.options.commandTimeout);
    }
    sendConnect(conn, renewed) {
      const cmd = { cmd: "connect", token: this.token, name: this.options.name, version: this.options.version };
      if (this.connectData !== void 0) cmd["data"] = this.connectData;
      const req = this.makeRequest(cmd, { retry: false, whenBusy: false }, () => void 0, (error) => {
        if (this.opening !== conn) return;
        if (error instanceof ReplyError) this.connectRefused(conn, error, renewed);
      });
      req.onResult = (result) => this.connectedOn(conn, result);
      this.sendOn(conn, req);
    }
    connectRefused(conn, error, renewed) {
      if (error.code === ErrorCode.TOKEN_EXPIRED && this.getToken !== void 0 && !renewed) {
        this.fetchToken().then(
          () => this.opening === conn && this.sendConnect(conn, true),
          (e) => {
            this.emit("error", { error: new RealtimeError(`getToken failed: ${String(e)}`) });
            if (this.opening === conn) conn.close(1e3, "no token");
          }
        );
        return;
      }
      if (error.temporary) {
        conn.close(1e3, "connect refused for now");
        return;
      }
      const code = AUTH_ERRORS.has(error.code) ? CloseCode.UNAUTHORIZED : CloseCode.BAD_REQUEST;
      this.stop(new ConnectionClosed(code, error.message));
    }
    connectedOn(conn, result) {
      if (this.opening !== conn) return;
      this.opening = void 0;
      this.conn = conn;
      this._clientId = str(result["client"], "client");
      this._user = typeof result["user"] === "string" ? result["user"] : "";
      this.pingInterval = typeof result["ping"] === "number" && result["ping"] > 0 ? result["ping"] * 1e3 : 25e3;
      this.expires = optU64(result["expires"], "expires") ?? 0;
      this.attempt = 0;
      this.advice = void 0;
      this.handshakeFailed = false;
      this.setState("connected");
      this.emit("connected", { client: this._clientId, user: this._user, expires: this.expires });
      this.scheduleAliveCheck(conn);
      this.scheduleRefresh(conn, false);
      for (const sub of this.subs.values()) if (sub._confirmed) this.resubscribe(conn, sub, false);
      const waiting = this.waiting.splice(0);
      for (const req of waiting) this.sendOn(conn, req);
      for (const waiter of this.connectWaiters.splice(0)) waiter.resolve();
    }
    dropped(conn, code, reason) {
      const disconnect = conn === this.conn || conn === this.opening ? this.disconnects.get(conn) : void 0;
      this.disconnects.delete(conn);
      const requests = this.pending.get(conn);
      this.pending.delete(conn);
      if (conn !== this.conn && conn !== this.opening) return;
      const wasOpen = conn.opened;
      if (this.conn === conn) this.conn = void 0;
      if (this.opening === conn) this.opening = void 0;
      if (this.aliveTimer !== void 0) clearTimeout(this.aliveTimer);
      if (this.refreshTimer !== void 0) clearTimeout(this.refreshTimer);
      this.aliveTimer = this.refreshTimer = void 0;
      if (disconnect !== void 0) {
        code = typeof disconnect["code"] === "number" ? disconnect["code"] : code;
        reason = typeof disconnect["reason"] === "string" ? disconnect["reason"] : reason;
      }
      const retryAfter = disconnect !== void 0 && typeof disconnect["retry_after"] === "number" ? disconnect["retry_after"] : conn.refusedFor;
      const reconnect = this._state !== "closed" && (disconnect !== void 0 && typeof disconnect["reconnect"] === "boolean" ? disconnect["reconnect"] : shouldReconnect(code));
      const lost = new ConnectionLost(code, reason);
      const again = [];
      for (const req of requests?.values() ?? []) {
        req.conn = req.id = void 0;
        if (req.done) continue;
        const retry = typeof req.retry === "function" ? req.retry() : req.retry;
        if (retry && reconnect) again.push(req);
        else this.finish(req, lost);
      }
      this.waiting.unshift(...again);
      for (const sub of this.subs.values()) sub._held = void 0;
      const event = { code, reason, reconnect };
      if (retryAfter !== void 0) event.retryAfter = retryAfter;
      this.emit("disconnected", event);
      if (this._state === "paused" || this._state === "closed") return;
      if (!reconnect) {
        this.stop(new ConnectionClosed(code, reason));
        return;
      }
      if (code === CloseCode.TOKEN_EXPIRED) this.tokenStale = true;
      this.advice = retryAfter ?? REFUSAL_FLOOR[code];
      this.handshakeFailed = !wasOpen;
      this.setState("connecting");
      this.scheduleReconnect();
    }
    scheduleReconnect() {
      if (this._state !== "connecting") return;
      let delay = backoff(this.attempt++, this.options.minBackoff, this.options.maxBackoff);
      delay = afterAdvice(delay, this.advice ?? (this.handshakeFailed ? 1e3 : void 0));
      this.advice = void 0;
      if (this.reconnectTimer !== void 0) clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = void 0;
        this.open();
      }, delay);
    }
    /** Dead-connection check for runtimes that cannot see WebSocket pings: ping after `ping` s of silence; dead after 2 × `ping`. */
    scheduleAliveCheck(conn) {
      const interval = this.pingInterval;
      let pinged = 0;
      const check = () => {
        this.aliveTimer = void 0;
        if (this.conn !== conn) return;
        const now = Date.now();
        const silent = now - conn.lastReceived;
        if (silent >= 2 * interval) {
          conn.close(1e3, "no message for 2 \xD7 ping");
          return;
        }
        if (silent >= interval && pinged < conn.lastReceived + interval) {
          pinged = now;
          this.call({ cmd: "ping" }, { retry: false, whenBusy: false }).catch(() => void 0);
        }
        this.aliveTimer = setTimeout(check, Math.max(50, Math.min(interval / 2, conn.lastReceived + 2 * interval - now)));
      };
      this.aliveTimer = setTimeout(check, interval / 2);
    }
    /** Refresh the token a tenth of its lifetime (1..60 s) before it expires. */
    scheduleRefresh(conn, failed) {
      if (!this.expires || this.getToken === void 0) return;
      const remaining = this.expires * 1e3 - Date.now();
      let wait = remaining - Math.max(1e3, Math.min(6e4, remaining / 10));
      if (failed) wait = Math.max(1e3, Math.min(3e4, remaining / 4));
      wait = Math.max(wait, 1e3);
      if (this.refreshTimer !== void 0) clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = void 0;
        if (this.conn !== conn) return;
        this.fetchToken().then(() => this.call({ cmd: "refresh", token: this.token }, { retry: false, whenBusy: true })).then((result) => {
          this.expires = optU64(result["expires"], "expires") ?? 0;
          if (this.conn === conn) this.scheduleRefresh(conn, false);
        }).catch((error) => {
          if (this.conn !== conn || this._state !== "connected") return;
          this.emit("error", { error: new RealtimeError(`token refresh failed: ${String(error)}`) });
          if (this.expires * 1e3 > Date.now()) this.scheduleRefresh(conn, true);
        });
      }, wait);
    }
    // --- frames ----------------------------------------------------------------
    received(conn, message) {
      if ("id" in message && !("push" in message)) {
        this.reply(conn, message);
        return;
      }
      const push = message["push"];
      if (push === "disconnect") {
        this.disconnects.set(conn, message);
        return;
      }
      if (conn !== this.conn) return;
      const channel = message["channel"];
      const sub = typeof channel === "string" ? this.subs.get(channel) : void 0;
      if (sub === void 0) return;
      if (push === "unsub") {
        if (message["reason"] === RECOVER) {
          if (sub._held === void 0) this.resubscribe(conn, sub, false);
        } else {
          this.subs.delete(sub.channel);
          sub._end(typeof message["reason"] === "string" ? message["reason"] : "unsubscribed");
        }
        return;
      }
      let gap;
      try {
        gap = sub._push(message);
      } catch (error) {
        this.subs.delete(sub.channel);
        sub._end(error.message, error);
        this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true }).catch(() => void 0);
        return;
      }
      if (gap) this.resubscribe(conn, sub, true);
    }
    reply(conn, message) {
      const id = message["id"];
      const error = message["error"];
      const requests = this.pending.get(conn);
      if (id === 0 && isMap(error) && requests !== void 0) {
        const code = Number(error["code"]);
        const failure = new ReplyError(code, String(error["message"] ?? ""), false);
        const lost = conn.unreadFrame().map((n) => requests.get(n)).filter((r) => r !== void 0);
        for (const req2 of lost) this.finish(req2, failure);
        if (lost.length > 0) return;
      }
      const req = typeof id === "number" ? requests?.get(id) : void 0;
      if (req === void 0) {
        if (isMap(error)) {
          this.emit("error", { error: new ReplyError(Number(error["code"]), String(error["message"] ?? ""), false) });
        }
        return;
      }
      requests.delete(id);
      req.conn = req.id = void 0;
      if (req.done) return;
      if (isMap(error)) {
        const code = Number(error["code"]);
        const retryAfter = typeof error["retry_after"] === "number" ? error["retry_after"] : void 0;
        if (code === ErrorCode.TOO_MANY_REQUESTS && req.whenBusy && retryAfter !== void 0 && retryAfter > 0) {
          this.busy.push(req);
          this.later(() => {
            const at = this.busy.indexOf(req);
            if (at < 0) return;
            this.busy.splice(at, 1);
            if (!req.done) this.dispatch(req);
          }, busyWait(retryAfter));
          return;
        }
        this.finish(req, new ReplyError(code, String(error["message"] ?? ""), isTemporary(code), retryAfter));
        return;
      }
      const result = isMap(message["result"]) ? message["result"] : {};
      try {
        req.onResult?.(result, conn);
      } catch (e) {
        this.finish(req, e);
        return;
      }
      this.finish(req, void 0, result);
    }
    // --- commands --------------------------------------------------------------
    makeRequest(cmd, options, resolve, reject) {
      const req = { ...options, cmd, resolve, reject, done: false, deadline: 0 };
      if (this._state !== "paused") this.armTimeout(req, Date.now() + this.options.commandTimeout);
      const signal = options.signal;
      if (signal) {
        if (signal.aborted) {
          this.finish(req, abortReason(signal));
        } else {
          const onAbort = () => this.finish(req, abortReason(signal));
          signal.addEventListener("abort", onAbort, { once: true });
          req.offAbort = () => signal.removeEventListener("abort", onAbort);
        }
      }
      return req;
    }
    armTimeout(req, deadline) {
      if (req.done) return;
      req.deadline = deadline;
      if (req.timer !== void 0) clearTimeout(req.timer);
      req.timer = setTimeout(() => {
        req.timer = void 0;
        this.finish(req, new CommandTimeout(`no reply to ${String(req.cmd["cmd"])} within ${this.options.commandTimeout} ms`));
      }, Math.max(0, deadline - Date.now()));
    }
    stopTimers(req) {
      if (req.timer !== void 0) clearTimeout(req.timer);
      if (req.busyTimer !== void 0) clearTimeout(req.busyTimer);
      req.timer = req.busyTimer = void 0;
    }
    finish(req, error, result) {
      if (req.done) return;
      req.done = true;
      this.stopTimers(req);
      req.offAbort?.();
      req.offAbort = void 0;
      if (req.conn !== void 0 && req.id !== void 0) this.pending.get(req.conn)?.delete(req.id);
      const i = this.waiting.indexOf(req);
      if (i >= 0) this.waiting.splice(i, 1);
      if (error) req.reject(error);
      else req.resolve(result);
    }
    /** Send now if connected, else wait for the next connection. */
    dispatch(req) {
      if (req.done) return;
      if (this.conn !== void 0 && this._state === "connected") this.sendOn(this.conn, req);
      else this.waiting.push(req);
    }
    sendOn(conn, req) {
      const requests = this.pending.get(conn);
      if (requests === void 0) {
        this.waiting.push(req);
        return;
      }
      let id;
      do {
        this.nextId = this.nextId % MAX_ID + 1;
        id = this.nextId;
      } while (requests.has(id));
      req.id = id;
      req.conn = conn;
      requests.set(id, req);
      conn.send({ id, ...req.cmd });
    }
    /** Run one command; see the module's docstring for what is retried. */
    call(cmd, options) {
      if (this._state === "closed") return Promise.reject(this.closedError);
      if (this._state === "idle") return Promise.reject(new RealtimeError("call connect() first"));
      return new Promise((resolve, reject) => {
        const req = this.makeRequest(cmd, options, resolve, reject);
        this.dispatch(req);
      });
    }
    // --- subscriptions -----------------------------------------------------------
    /**
     * Subscribe to `channel`. Live channels: `sub.state` holds the snapshot when this resolves. Channels that need a
     * subscription token: pass `token`, or `getToken` (called before the subscribe, before every resubscribe, and
     * again when the hub answers 109 TOKEN_EXPIRED), so the subscription outlives any one token.
     */
    async subscribe(channel, options = {}) {
      if (this.subs.has(channel)) throw new RealtimeError(`already subscribed to ${channel}`);
      if (this._state === "closed") throw this.closedError;
      if (this._state === "idle") throw new RealtimeError("call connect() first");
      const sub = new Subscription(this.subOwner, channel, options.token, options.getToken);
      this.subs.set(channel, sub);
      sub._held = [];
      let settle;
      sub._settled = new Promise((resolve) => settle = resolve);
      try {
        const leaving = this.leaving.get(channel);
        if (leaving !== void 0) await leaving;
        for (let attempt = 1; ; attempt++) {
          if (sub._getToken !== void 0 && (attempt > 1 || sub._token === void 0)) {
            await this.subToken(sub, options.signal);
          }
          try {
            await this.call(this.subscribeCommand(sub, void 0, void 0), {
              retry: true,
              whenBusy: true,
              signal: options.signal,
              onResult: (result, conn) => {
                if (this.subs.get(channel) !== sub) {
                  this.call({ cmd: "unsubscribe", channel }, { retry: false, whenBusy: true }).catch(() => void 0);
                  return;
                }
                if (sub._subscribed(readSubscribe(result, channel), void 0, void 0)) this.resubscribe(conn, sub, true);
              }
            });
            break;
          } catch (error) {
            const expired = error instanceof ReplyError && error.code === ErrorCode.TOKEN_EXPIRED;
            if (!expired || sub._getToken === void 0 || attempt >= 2 || this.subs.get(channel) !== sub) throw error;
          }
        }
      } catch (error) {
        if (this.subs.get(channel) === sub) this.subs.delete(channel);
        sub._held = void 0;
        if (sub._confirmed) {
          this.call({ cmd: "unsubscribe", channel }, { retry: false, whenBusy: true }).catch(() => void 0);
        }
        throw error;
      } finally {
        settle();
      }
      return sub;
    }
    /** A fresh subscription token for `sub` from its getToken (cancelled by `signal`, pause() and close()). */
    async subToken(sub, signal) {
      const abort = new AbortController();
      const cancel = () => abort.abort();
      signal?.addEventListener("abort", cancel, { once: true });
      this.subTokenAborts.add(abort);
      try {
        if (signal?.aborted) throw abortReason(signal);
        const token = await sub._getToken(abort.signal);
        if (signal?.aborted) throw abortReason(signal);
        if (abort.signal.aborted) throw new AbortError("token request cancelled");
        if (typeof token !== "string") throw new TypeError("getToken must resolve to a string");
        sub._token = token;
      } finally {
        signal?.removeEventListener("abort", cancel);
        this.subTokenAborts.delete(abort);
      }
    }
    subscribeCommand(sub, since, version) {
      const cmd = { cmd: "subscribe", channel: sub.channel };
      if (since !== void 0) {
        cmd["offset"] = since.offset;
        cmd["epoch"] = since.epoch;
      }
      if (sub._token !== void 0) cmd["token"] = sub._token;
      if (version !== void 0 && version > 0) cmd["version"] = version;
      return cmd;
    }
    /**
     * Subscribe again from `sub`'s position and version (after a reconnect, an unsub "recover", or a gap), with a
     * fresh subscription token when the subscription has getToken (`renewed`: this one follows a 109).
     */
    resubscribe(conn, sub, unsubscribeFirst, renewed = false) {
      if (this.subs.get(sub.channel) !== sub || this.conn !== conn) return;
      if (sub._held !== void 0 && unsubscribeFirst) return;
      if (unsubscribeFirst) {
        this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true }).catch(() => void 0);
      }
      sub._held = [];
      if (sub._getToken === void 0) {
        this.sendResubscribe(conn, sub, renewed);
        return;
      }
      this.subToken(sub).then(
        () => this.sendResubscribe(conn, sub, renewed),
        (error) => {
          if (this.subs.get(sub.channel) !== sub || this.conn !== conn) return;
          this.emit("error", { error: new RealtimeError(`getToken failed for ${sub.channel}: ${String(error)}`) });
          sub._held = void 0;
          this.later(() => this.resubscribe(conn, sub, false), backoff(1, this.options.minBackoff, this.options.maxBackoff));
        }
      );
    }
    sendResubscribe(conn, sub, renewed) {
      if (this.subs.get(sub.channel) !== sub || this.conn !== conn) return;
      const since = sub._position();
      const version = sub.version > 0 ? sub.version : void 0;
      this.call(this.subscribeCommand(sub, since, version), {
        retry: false,
        whenBusy: true,
        onResult: (result) => {
          if (this.subs.get(sub.channel) !== sub) {
            this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true }).catch(() => void 0);
            return;
          }
          if (sub._subscribed(readSubscribe(result, sub.channel), since, version)) this.resubscribe(conn, sub, true);
        }
      }).catch((error) => {
        if (this.subs.get(sub.channel) !== sub) return;
        if (error instanceof ReplyError && error.code === ErrorCode.NOT_SUBSCRIBED) {
          sub._held = void 0;
          this.resubscribe(conn, sub, false, renewed);
        } else if (error instanceof ReplyError && error.code === ErrorCode.TOKEN_EXPIRED && sub._getToken !== void 0 && !renewed) {
          sub._held = void 0;
          this.resubscribe(conn, sub, false, true);
        } else if (error instanceof ReplyError && error.temporary) {
          sub._held = void 0;
          this.later(() => this.resubscribe(conn, sub, false), Math.max(
            error.retryAfter ?? 0,
            backoff(1, this.options.minBackoff, this.options.maxBackoff)
          ));
        } else if (error instanceof ReplyError || !(error instanceof ConnectionLost || error instanceof CommandTimeout || error instanceof ConnectionClosed)) {
          this.subs.delete(sub.channel);
          sub._end(error.message, error);
        }
      });
    }
    async unsubscribeSub(sub) {
      if (this.subs.get(sub.channel) !== sub) {
        sub._end("unsubscribed");
        return;
      }
      this.subs.delete(sub.channel);
      sub._end("unsubscribed");
      if (!sub._confirmed && sub._settled !== void 0) {
        const settled = sub._settled;
        this.leaving.set(sub.channel, settled);
        void settled.then(() => {
          if (this.leaving.get(sub.channel) === settled) this.leaving.delete(sub.channel);
        });
      }
      if (this._state !== "connected" || !sub._confirmed) return;
      try {
        await this.call({ cmd: "unsubscribe", channel: sub.channel }, { retry: false, whenBusy: true });
      } catch (error) {
        if (error instanceof ReplyError && error.code !== ErrorCode.NOT_SUBSCRIBED) throw error;
      }
    }
    // --- chat and channels -------------------------------------------------------
    /**
     * Publish `data` to `channel`. A publish id (`key`) is generated when not given; a signed-in user's publish is
     * sent again with the same key after a drop, 108 or 116, so it is stored at most once. Errors carry `key`.
     */
    async publish(channel, data, options = {}) {
      const key = options.key ?? newPublishKey();
      const cmd = { cmd: "publish", channel, data: data === void 0 ? null : data, key };
      for (let attempt = 1; ; attempt++) {
        try {
          const result = await this.call(cmd, { retry: () => this._user !== "", whenBusy: true, signal: options.signal });
          return readSent(result);
        } catch (error) {
          if (error instanceof RealtimeError) error.key = key;
          const retryable = error instanceof ReplyError && (error.code === ErrorCode.OUTCOME_UNKNOWN || error.code === ErrorCode.NOT_AVAILABLE);
          if (!retryable || this._user === "" || attempt >= PUBLISH_ATTEMPTS) throw error;
        }
        await new Promise((resolve) => this.later(resolve, PUBLISH_RETRY_DELAY * attempt));
      }
    }
    /**
     * Call `method` of the app's backend (the hub's rpc proxy) with `data`; resolves with its answer. The backend's
     * refusals reject with a ReplyError carrying the app's own code (1000 and up) or 103; 108 (temporary): the
     * backend could not answer, and the call may or may not have run. Never sent again after a reconnect.
     */
    async rpc(method, data = null, options = {}) {
      const result = await this.call({ cmd: "rpc", method, data: data === void 0 ? null : data }, { retry: false, whenBusy: true, signal: options.signal });
      return result["data"] ?? null;
    }
    /** One page of history, oldest first: the newest `limit` (default and at most 100), or those before/after an offset. */
    async history(channel, options = {}) {
      if (options.before !== void 0 && options.after !== void 0) throw new RealtimeError("pass before or after, not both");
      const cmd = { cmd: "history", channel };
      if (options.limit !== void 0) cmd["limit"] = options.limit;
      if (options.before !== void 0) cmd["before"] = options.before;
      if (options.after !== void 0) cmd["after"] = options.after;
      const result = await this.call(cmd, { retry: true, whenBusy: true, signal: options.signal });
      return readHistory(result, channel);
    }
    /**
     * Pages of history: without `after`, from the newest backwards (each page's `before` is the previous page's
     * first offset); with `after`, forwards. It follows `truncated` pages and full pages, and stops at a page that
     * is neither (or empty).
     */
    async *historyPages(channel, options = {}) {
      const limit = options.limit === void 0 || options.limit <= 0 ? MAX_HISTORY_PAGE : Math.min(options.limit, MAX_HISTORY_PAGE);
      let { before, after } = options;
      for (; ; ) {
        const request = { limit };
        if (before !== void 0) request.before = before;
        if (after !== void 0) request.after = after;
        if (options.signal !== void 0) request.signal = options.signal;
        const page = await this.history(channel, request);
        if (page.publications.length === 0) return;
        yield page;
        if (!page.truncated && page.publications.length < limit) return;
        if (after === void 0) {
          before = page.publications[0].offset;
          if (before <= 1) return;
        } else {
          after = page.publications[page.publications.length - 1].offset;
        }
      }
    }
    /**
     * Tell a chat channel's subscribers this user is typing (or stopped). `true` is sent at most once per the hub's
     * typing interval per channel (1 s, or what a 110 reply's retry_after says): calls in between resolve at once.
     */
    async typing(channel, typing = true) {
      if (typing) {
        const until = this.typingUntil.get(channel) ?? 0;
        if (Date.now() < until) return;
        this.typingUntil.set(channel, Date.now() + TYPING_INTERVAL);
      } else {
        this.typingUntil.delete(channel);
      }
      try {
        await this.call({ cmd: "typing", channel, typing }, { retry: false, whenBusy: false });
      } catch (error) {
        if (typing && error instanceof ReplyError && error.code === ErrorCode.TOO_MANY_REQUESTS && error.retryAfter) {
          this.typingUntil.set(channel, Date.now() + error.retryAfter);
          return;
        }
        if (typing) this.typingUntil.delete(channel);
        throw error;
      }
    }
    /** Mark a chat channel read up to `offset`; returns the receipt the hub holds (it never moves backwards). */
    async read(channel, offset) {
      const result = await this.call({ cmd: "read", channel, offset }, { retry: true, whenBusy: true });
      return u64(result["read"], "read");
    }
    /** Who has read a chat channel up to where: user → offset. */
    async receipts(channel) {
      const result = await this.call({ cmd: "receipts", channel }, { retry: true, whenBusy: true });
      const out = {};
      const receipts = isMap(result["receipts"]) ? result["receipts"] : {};
      for (const [user, offset] of Object.entries(receipts)) out[user] = u64(offset, "receipt");
      return out;
    }
    /** Who is in `channel`: connection id → { user, info }. */
    async presence(channel) {
      const result = await this.call({ cmd: "presence", channel }, { retry: true, whenBusy: true });
      const out = {};
      const presence = isMap(result["presence"]) ? result["presence"] : {};
      for (const [client, member] of Object.entries(presence)) {
        if (!isMap(member)) continue;
        const entry = { user: String(member["user"] ?? "") };
        if (member["info"] !== void 0 && member["info"] !== null) entry.info = member["info"];
        out[client] = entry;
      }
      return out;
    }
    /** How many connections and unique users are in `channel`. */
    async presenceStats(channel) {
      const result = await this.call({ cmd: "presence_stats", channel }, { retry: true, whenBusy: true });
      return { clients: u64(result["clients"], "clients"), users: u64(result["users"], "users") };
    }
    /** Online status and last seen time of `users`, in order (100 per command). */
    async status(...users) {
      const out = [];
      for (let i = 0; i < users.length; i += MAX_STATUS_USERS) {
        const result = await this.call({ cmd: "status", users: users.slice(i, i + MAX_STATUS_USERS) }, { retry: true, whenBusy: true });
        const list = Array.isArray(result["users"]) ? result["users"] : [];
        out.push(...list.map(readStatus));
      }
      return out;
    }
    /** Set `key` of a live channel (null deletes it); with `version`, only if the key is still at it (else 115). */
    async stateSet(channel, key, value, options = {}) {
      const cmd = { cmd: "state_set", channel, key, value: value === void 0 ? null : value };
      if (options.version !== void 0) cmd["version"] = options.version;
      const result = await this.call(cmd, { retry: false, whenBusy: true });
      return u64(result["version"], "version");
    }
    /** Apply a JSON Merge Patch to `key` of a live channel; returns the channel's new version. */
    async statePatch(channel, key, patch, options = {}) {
      if (!isMap(patch)) throw new TypeError("a merge patch is a map");
      const cmd = { cmd: "state_patch", channel, key, patch };
      if (options.version !== void 0) cmd["version"] = options.version;
      const result = await this.call(cmd, { retry: false, whenBusy: true });
      return u64(result["version"], "version");
    }
    /** Round trip to the hub through the protocol, in ms. */
    async ping() {
      const start = Date.now();
      await this.call({ cmd: "ping" }, { retry: true, whenBusy: true });
      return Date.now() - start;
    }
    /** The hub's ping interval in seconds (from the last connect reply). */
    get serverPing() {
      return this.pingInterval / 1e3;
    }
  };
  return __toCommonJS(index_exports);
})();
//# sourceMappingURL=realtime.iife.js.map
