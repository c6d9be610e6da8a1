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

/**
 * The subscribers of one KAS process: each bus delivers the events it receives here. A listener
 * that throws is logged and does not keep the event from the others.
 */
export class GitPushSubscribers {
  private readonly listeners = new Set<GitPushListener>();

  constructor(private readonly logger?: Logger) {}

  add(listener: GitPushListener, signal: AbortSignal): void {
    if (signal.aborted) return;
    // A wrapper per subscription, so the same function may subscribe twice.
    const entry: GitPushListener = (event) => listener(event);
    this.listeners.add(entry);
    signal.addEventListener("abort", () => this.listeners.delete(entry), { once: true });
  }

  deliver(event: GitPushEventInfo): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (err) {
        this.logger?.error({ err, projectId: event.projectId }, "git push subscriber failed");
      }
    }
  }

  get size(): number {
    return this.listeners.size;
  }
}

/** GitPushEvents for a single KAS process: subscribers are called synchronously on publish. */
export class InMemoryGitPushEvents implements GitPushEvents {
  private readonly local: GitPushSubscribers;

  constructor(logger?: Logger) {
    this.local = new GitPushSubscribers(logger);
  }

  publish(event: GitPushEventInfo): Promise<void> {
    this.local.deliver(event);
    return Promise.resolve();
  }

  subscribe(listener: GitPushListener, signal: AbortSignal): void {
    this.local.add(listener, signal);
  }

  /** Subscriptions currently open (tests, metrics). */
  get subscribers(): number {
    return this.local.size;
  }
}
