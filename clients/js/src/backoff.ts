/** Reconnect delays. Hand-written (a dozen lines): no dependency is worth it. */
export interface Backoff {
  /** The first attempt's ceiling (ms). */
  initialMs: number;
  /** The ceiling never grows past this (ms). */
  maxMs: number;
  factor: number;
  /** After 4429 and 1013, wait at least this long (ms). */
  slowDownMs: number;
}

export const BACKOFF_DEFAULTS: Backoff = { initialMs: 500, maxMs: 30000, factor: 2, slowDownMs: 5000 };

/**
 * The delay before reconnect attempt `attempt` (0 first): full jitter, anywhere from 0 to
 * `initialMs * factor^attempt` capped at `maxMs`, so that the clients of a restarted server
 * do not all come back in the same instant. `slow` (4429, 1013: the server asked for a pause)
 * waits at least `slowDownMs`, half of it kept ("equal jitter").
 */
export function backoffDelay(backoff: Backoff, attempt: number, slow: boolean, random: () => number = Math.random): number {
  const { initialMs, maxMs, factor, slowDownMs } = backoff;
  let ceiling = Math.min(maxMs, initialMs * factor ** Math.min(attempt, 64));
  if (!slow) return Math.round(random() * ceiling);
  ceiling = Math.max(ceiling, slowDownMs);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
