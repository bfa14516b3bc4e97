/**
 * The client rules of a live channel's state (docs/protocol.md, "State push" and "state_set"). Pure.
 *
 * A LiveState holds key → value, the version that set each key, and the channel's `version`: every change up to
 * it is applied. It takes the subscribe reply's snapshot, then each state push: a merge patch applies only at
 * `version + 1`, a full value whenever it is newer than the key's. A patch beyond `version + 1` is a gap: the
 * caller resubscribes with `version` and applies the reply's snapshot, which holds only what changed.
 */
import { applyMergePatch, sameValue } from "./mergePatch.js";
import type { StateEntry } from "./messages.js";

export interface StateChange {
  key: string;
  /** The key's new value; null when it was deleted. */
  value: unknown;
  version: number;
}

/** Full values applied ahead of the version, kept to close the gap later. */
export const MAX_AHEAD = 256;

export class LiveState {
  /** Every change up to this state version is in `values`. */
  version = 0;
  readonly values = new Map<string, unknown>();
  private readonly keyVersions = new Map<string, number>();
  private ahead = new Set<number>();

  /** The version that set `key` (0 when absent): what a conditional write of it expects. */
  keyVersion(key: string): number {
    return this.values.has(key) ? (this.keyVersions.get(key) ?? 0) : 0;
  }

  /**
   * A subscribe reply's state at `version`: all keys, or (when `asked` is a version) those changed after it.
   * A reply below `asked`, or `full`, replaces everything. Changes are returned only with `announce`.
   */
  applySnapshot(version: number, entries: StateEntry[], asked: number | undefined, announce: boolean, full: boolean): StateChange[] {
    const changes: StateChange[] = [];
    if (asked === undefined || version < asked || full) {
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
    this.ahead = new Set();
    for (const v of ahead) this.advance(v);
    for (const key of [...this.keyVersions.keys()]) if (!this.values.has(key)) this.keyVersions.delete(key);
    return changes;
  }

  /** One state push; returns its changes (none when stale), or null when a change was missed (resubscribe). */
  apply(key: string, version: number, push: { value?: unknown; patch?: unknown }): StateChange[] | null {
    let value: unknown;
    if (push.patch !== undefined && push.patch !== null) {
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

  private put(key: string, value: unknown, version: number): StateChange {
    if (value === null) this.values.delete(key);
    else this.values.set(key, value);
    this.keyVersions.set(key, version);
    return { key, value, version };
  }

  private advance(v: number): void {
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
}
