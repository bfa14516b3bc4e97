/** Reconnect delays: exponential backoff with full jitter, and the hub's retry advice. Pure. */

/** Delay in ms before attempt `attempt` (0-based): random in 0 .. min(max, min * 2^attempt). */
export function backoff(attempt: number, min: number, max: number, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return random() * ceiling;
}

/**
 * The wait before the next attempt after a refusal with advice (ms): at least `advice`, plus a random
 * part of up to half as much again (`advice × (1 + 0.5 × random())`), or `delay` when that is longer.
 */
export function afterAdvice(delay: number, advice: number | undefined, random: () => number = Math.random): number {
  if (advice === undefined || advice <= 0) return delay;
  return Math.max(delay, advice * (1 + 0.5 * random()));
}

/** The wait before resending a command refused with 110 TOO_MANY_REQUESTS: retry_after plus up to as much again. */
export function busyWait(retryAfter: number, random: () => number = Math.random): number {
  return retryAfter * (1 + random());
}
