import type { UsageMetricsPayload } from "../platform-client/platform-client.js";

export type { UsageMetricsPayload };

/**
 * Usage counters KAS modules increment, sent to the platform as deltas by the usage_metrics
 * module (GitLab's usage_metrics): after a successful send the sent amounts are subtracted, so
 * what happens during a send is sent next time and nothing is counted twice.
 */
export class UsageMetrics {
  private readonly counters = new Map<string, number>();
  private readonly uniques = new Map<string, Set<number>>();

  /** Adds `n` (default 1) to counter `name`. */
  inc(name: string, n = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + n);
  }

  /** Records `id` under unique counter `name`. */
  addUnique(name: string, id: number): void {
    let set = this.uniques.get(name);
    if (!set) this.uniques.set(name, (set = new Set()));
    set.add(id);
  }

  /** What has not been sent yet; undefined when there is nothing. */
  pending(): UsageMetricsPayload | undefined {
    const counters = Object.fromEntries([...this.counters].filter(([, n]) => n > 0));
    const uniques = Object.fromEntries([...this.uniques].filter(([, s]) => s.size > 0).map(([name, s]) => [name, [...s]]));
    const payload: UsageMetricsPayload = {};
    if (Object.keys(counters).length > 0) payload.counters = counters;
    if (Object.keys(uniques).length > 0) payload.unique_counters = uniques;
    return payload.counters || payload.unique_counters ? payload : undefined;
  }

  /** `sent` reached the platform: subtract it (what came in meanwhile stays). */
  subtract(sent: UsageMetricsPayload): void {
    for (const [name, n] of Object.entries(sent.counters ?? {})) {
      const left = (this.counters.get(name) ?? 0) - n;
      if (left > 0) this.counters.set(name, left);
      else this.counters.delete(name);
    }
    for (const [name, ids] of Object.entries(sent.unique_counters ?? {})) {
      const set = this.uniques.get(name);
      if (!set) continue;
      for (const id of ids) set.delete(id);
      if (set.size === 0) this.uniques.delete(name);
    }
  }
}
