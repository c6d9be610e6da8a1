/** The longest delay setTimeout honours: above it Node fires after 1 ms (with a TimeoutOverflowWarning). */
export const maxTimerDelayMs = 0x7fffffff;

/** `ms` clamped to what setTimeout honours; a caller waking early re-checks its due time. */
export function safeTimeoutMs(ms: number): number {
  return Math.min(Math.max(0, ms), maxTimerDelayMs);
}

/**
 * A timer for a deadline `timeoutMs` away (e.g. a grpc-timeout, which can say up to 99 999 999
 * hours), or none when it lies beyond setTimeout's range (~24.8 days): such a deadline never
 * passes while the process runs in practice, and setTimeout would fire it after 1 ms instead.
 */
export function deadlineTimer(timeoutMs: number, onExpired: () => void): NodeJS.Timeout | undefined {
  if (!(timeoutMs <= maxTimerDelayMs)) return undefined;
  return setTimeout(onExpired, Math.max(0, timeoutMs));
}

/**
 * Resolves once `done()` holds or `timeoutMs` has passed, checking every `intervalMs` (for
 * draining at shutdown: calls in flight get a grace period to finish).
 */
export async function waitUntil(done: () => boolean, timeoutMs: number, intervalMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, intervalMs));
}
