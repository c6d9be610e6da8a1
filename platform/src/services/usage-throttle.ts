/**
 * Decides whether a credential's `last_used_at` should be written now. Writing on every use would
 * turn each agent reconnect and API call into a database write; GitLab likewise throttles it.
 * The in-memory map spares the database the query; the conditional UPDATE the caller issues keeps
 * the interval when several platform processes share a database.
 */
export class UsageThrottle {
  private readonly lastWriteMs = new Map<number, number>();

  constructor(
    /** Minimum time between two writes for the same id. */
    readonly intervalMs: number,
    /** Entries kept before stale ones are swept. */
    private readonly maxEntries = 10_000,
  ) {}

  /** True (and remembered) when `id` was not written within the interval before `nowMs`. */
  shouldWrite(id: number, nowMs: number): boolean {
    const last = this.lastWriteMs.get(id);
    if (last !== undefined && nowMs - last < this.intervalMs) return false;
    if (this.lastWriteMs.size >= this.maxEntries) this.sweep(nowMs);
    this.lastWriteMs.set(id, nowMs);
    return true;
  }

  private sweep(nowMs: number): void {
    for (const [id, at] of this.lastWriteMs) {
      if (nowMs - at >= this.intervalMs) this.lastWriteMs.delete(id);
    }
    // Everything is fresh (a burst of > maxEntries distinct ids): forget the oldest half rather
    // than grow without bound; the database condition still throttles those.
    if (this.lastWriteMs.size >= this.maxEntries) {
      let drop = Math.floor(this.maxEntries / 2);
      for (const id of this.lastWriteMs.keys()) {
        if (drop-- <= 0) break;
        this.lastWriteMs.delete(id);
      }
    }
  }
}
