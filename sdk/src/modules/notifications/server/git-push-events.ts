import type { Logger } from "pino";

/** A push to a project, as the platform reports it (`gitlab.agent.event.GitPushEvent`). */
export interface GitPushEventInfo {
  /** Numeric project id. */
  projectId: number;
  /** Full path, e.g. "group/project". */
  fullPath: string;
}

export type GitPushListener = (event: GitPushEventInfo) => void;

/**
 * Where KAS publishes the push events the platform sends it (`Notifications/GitPushEvent`) and
 * where the modules that react to pushes (Flux's ReconcileProjects, GitOps' manifest polling)
 * subscribe. GitLab's KAS publishes to the Redis channel `kas_events` so that every replica
 * hears every push; `InMemoryGitPushEvents` serves one KAS, and a Redis implementation plugs in
 * here for several.
 */
export interface GitPushEvents {
  /** Delivers `event` to every subscriber (of every replica). Rejects when it cannot be published. */
  publish(event: GitPushEventInfo): Promise<void>;
  /** Calls `listener` for every event published from now on, until `signal` aborts. */
  subscribe(listener: GitPushListener, signal: AbortSignal): void;
}

/** GitPushEvents for a single KAS process: subscribers are called synchronously on publish. */
export class InMemoryGitPushEvents implements GitPushEvents {
  private readonly listeners = new Set<GitPushListener>();

  constructor(private readonly logger?: Logger) {}

  publish(event: GitPushEventInfo): Promise<void> {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (err) {
        // One subscriber's failure must not keep the push from the others.
        this.logger?.error({ err, projectId: event.projectId }, "git push subscriber failed");
      }
    }
    return Promise.resolve();
  }

  subscribe(listener: GitPushListener, signal: AbortSignal): void {
    if (signal.aborted) return;
    // A wrapper per subscription, so the same function may subscribe twice.
    const entry: GitPushListener = (event) => listener(event);
    this.listeners.add(entry);
    signal.addEventListener("abort", () => this.listeners.delete(entry), { once: true });
  }

  /** Subscriptions currently open (tests, metrics). */
  get subscribers(): number {
    return this.listeners.size;
  }
}
