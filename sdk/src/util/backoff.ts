/** Exponential backoff with full jitter, capped. Reset after a success. */
export interface BackoffOptions {
  /** First delay, before jitter. Default 1 000 ms (GitLab agentk). */
  initialMs?: number;
  /** Cap on the delay. Default 20 000 ms (GitLab agentk). */
  maxMs?: number;
  /** Growth per failure. Default 1.6 (GitLab agentk). */
  factor?: number;
  /** Fraction of the delay that is randomized, 0..1. Default 0.2. */
  jitter?: number;
}

export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;
  private readonly jitter: number;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 1_000;
    this.maxMs = options.maxMs ?? 20_000;
    this.factor = options.factor ?? 1.6;
    this.jitter = options.jitter ?? 0.2;
  }

  /** The delay before the next attempt; each call grows it. */
  nextDelayMs(): number {
    const base = Math.min(this.maxMs, this.initialMs * this.factor ** this.attempt);
    this.attempt++;
    const spread = base * this.jitter;
    return Math.max(0, Math.round(base - spread + Math.random() * 2 * spread));
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
