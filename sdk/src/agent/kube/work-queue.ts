import type { Logger } from "pino";
import { Backoff } from "../../util/backoff.js";

/**
 * A work queue of keys with one worker (client-go's rate-limited workqueue, as GitLab's controllers
 * use it): a key queued several times before it is processed is processed once; a key whose
 * processing fails is retried later with its own backoff, reset after a success.
 */
export class WorkQueue {
  private readonly pending = new Set<string>();
  private readonly retries = new Map<string, { backoff: Backoff; timer?: NodeJS.Timeout }>();
  private wake: (() => void) | undefined;

  constructor(
    private readonly name: string,
    private readonly process: (key: string, signal: AbortSignal) => Promise<void>,
    private readonly logger: Logger,
    private readonly retry = { initialMs: 1_000, maxMs: 300_000 },
  ) {}

  add(key: string): void {
    this.pending.add(key);
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Processes keys one at a time until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
        const key = this.pending.values().next().value;
        if (key === undefined) {
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        this.pending.delete(key);
        try {
          await this.process(key, signal);
          const retry = this.retries.get(key);
          if (retry) clearTimeout(retry.timer);
          this.retries.delete(key);
        } catch (err) {
          if (signal.aborted) break;
          let retry = this.retries.get(key);
          if (!retry) this.retries.set(key, (retry = { backoff: new Backoff(this.retry) }));
          const delay = retry.backoff.nextDelayMs();
          this.logger.warn({ err, key, queue: this.name, retryInMs: delay }, "processing failed; will retry");
          clearTimeout(retry.timer);
          retry.timer = setTimeout(() => this.add(key), delay);
        }
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      for (const retry of this.retries.values()) clearTimeout(retry.timer);
      this.retries.clear();
    }
  }
}
