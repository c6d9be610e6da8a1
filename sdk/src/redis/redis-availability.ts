import type { Redis } from "ioredis";
import type { Logger } from "pino";

/**
 * Whether Redis answers, as seen by one KAS: an outage is logged once when it starts (not per
 * failed command) and once when it ends; then `onRecovered` listeners rebuild what Redis lost or
 * missed (this replica's registrations). A failed command or a lost connection starts an outage;
 * the connection coming back ready, or a command succeeding, ends it.
 */
export class RedisAvailability {
  private down: { since: number } | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly onReady = () => this.succeeded();
  private readonly onError = (error: Error) => this.failed("connection", error);
  private readonly onClose = () => this.failed("connection", new Error("connection closed"));

  constructor(
    private readonly redis: Redis,
    private readonly logger: Logger,
  ) {
    redis.on("ready", this.onReady);
    redis.on("error", this.onError);
    redis.on("close", this.onClose);
  }

  get isUp(): boolean {
    return this.down === undefined;
  }

  /** Something failed talking to Redis; logs when this starts an outage. */
  failed(operation: string, error: unknown): void {
    if (this.down || this.closed) return;
    this.down = { since: Date.now() };
    this.logger.error(
      { operation, err: error instanceof Error ? error.message : String(error) },
      "Redis unavailable: serving agents connected to this replica only until it returns",
    );
  }

  /** A command succeeded; ends an outage (and starts the rebuild). */
  succeeded(): void {
    if (!this.down || this.closed || this.redis.status !== "ready") return;
    const downMs = Date.now() - this.down.since;
    this.down = undefined;
    this.logger.warn({ downMs }, "Redis available again: rebuilding this replica's registrations");
    for (const listener of [...this.listeners]) listener();
  }

  /** Runs `work`, reporting its outcome; a failure is reported and returns undefined. */
  async run<T>(operation: string, work: () => Promise<T>): Promise<T | undefined> {
    try {
      const result = await work();
      this.succeeded();
      return result;
    } catch (error) {
      this.failed(operation, error);
      return undefined;
    }
  }

  /** Calls `listener` after each outage ends. Returns a function that stops that. */
  onRecovered(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  private closed = false;

  /** Stops watching (the connection is closing: that is no outage). */
  close(): void {
    this.closed = true;
    this.redis.off("ready", this.onReady);
    this.redis.off("error", this.onError);
    this.redis.off("close", this.onClose);
    this.listeners.clear();
  }
}
