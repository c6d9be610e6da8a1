import { createHash } from "node:crypto";
import type { PlatformClient } from "../../../platform-client/platform-client.js";

export interface ProjectAccessCacheOptions {
  platform: PlatformClient;
  /** How long an answer (yes or no) is reused. Default 300 000 ms (GitLab: 5 min). */
  ttlMs?: number;
  /** How long a failure is reused before the platform is asked again. Default 60 000 ms (GitLab: 1 min). */
  errorTtlMs?: number;
  /** Entries kept at most; the oldest go first. Default 10 000. */
  maxEntries?: number;
}

type Entry = { until: number; allowed: boolean } | { until: number; error: unknown };

/**
 * Answers of `verify_project_access` (may this agent read that project?), cached per agent token
 * and project as GitLab's KAS does: a push to a busy project asks the platform once per agent,
 * not once per push. Failures are cached too, so an outage costs one request per minute.
 */
export class ProjectAccessCache {
  private readonly entries = new Map<string, Entry>();
  private readonly ttlMs: number;
  private readonly errorTtlMs: number;
  private readonly maxEntries: number;

  constructor(private readonly options: ProjectAccessCacheOptions) {
    this.ttlMs = options.ttlMs ?? 300_000;
    this.errorTtlMs = options.errorTtlMs ?? 60_000;
    this.maxEntries = options.maxEntries ?? 10_000;
  }

  /** Whether the token's agent may read `fullPath`; throws the platform's error (cached for errorTtlMs). */
  async verify(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<boolean> {
    const verify = this.options.platform.verifyProjectAccess;
    if (!verify) return false;
    const key = `${createHash("sha256").update(agentToken).digest("base64")}:${fullPath}`;
    const now = Date.now();
    const cached = this.entries.get(key);
    if (cached && cached.until > now) {
      if ("error" in cached) throw cached.error;
      return cached.allowed;
    }
    let entry: Entry;
    try {
      entry = { until: now + this.ttlMs, allowed: await verify.call(this.options.platform, agentToken, fullPath, signal) };
    } catch (error) {
      if (signal?.aborted) throw error;
      entry = { until: now + this.errorTtlMs, error };
    }
    this.remember(key, entry);
    if ("error" in entry) throw entry.error;
    return entry.allowed;
  }

  private remember(key: string, entry: Entry): void {
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      const now = Date.now();
      for (const [k, e] of this.entries) if (e.until <= now) this.entries.delete(k);
      while (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    }
    this.entries.set(key, entry);
  }
}
