/** Why an agent is not ready, or `undefined` when it is. */
export type NotReadyReason = string | undefined;

export interface AgentHealthOptions {
  /**
   * How long the agent may be without KAS (tunnels failing, registration failing) before it is no
   * longer ready, in ms. Default 60 000 ms. A short blip (KAS restarting) keeps the agent ready.
   */
  kasLossTimeoutMs?: number;
  /** Clock, for tests. Default `Date.now`. */
  now?: () => number;
}

/** What the agent knows about its link to KAS, for readiness and for operators. */
export interface AgentHealthSnapshot {
  registered: boolean;
  /** Commit of the last configuration applied; undefined before the first. */
  configCommitId: string | undefined;
  /** Since when KAS has been unreachable (epoch ms), undefined while it is reachable. */
  kasLostSinceMs: number | undefined;
  /** The last failure talking to KAS, if any (no secret: a gRPC code and message). */
  lastError: string | undefined;
}

/**
 * Readiness of an agent, as Kubernetes should see it: not ready until the agent has registered
 * with KAS and received its configuration; not ready again once KAS has been unreachable for
 * longer than `kasLossTimeoutMs` (GitLab's agentk always answers ready). Modules report to it
 * through `AgentModuleContext.health`.
 */
export class AgentHealth {
  private readonly kasLossTimeoutMs: number;
  private readonly now: () => number;
  private registered = false;
  private configCommitId: string | undefined;
  private kasLostSinceMs: number | undefined;
  private lastError: string | undefined;

  constructor(options: AgentHealthOptions = {}) {
    this.kasLossTimeoutMs = options.kasLossTimeoutMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /** KAS accepted a registration: KAS is reachable. */
  reportRegistered(): void {
    this.registered = true;
    this.kasLostSinceMs = undefined;
  }

  /** A configuration was applied (it came from KAS, so KAS is reachable). */
  reportConfiguration(commitId: string): void {
    this.configCommitId = commitId;
    this.kasLostSinceMs = undefined;
  }

  /** Talking to KAS failed (tunnel, registration); the loss clock starts if it is not running. */
  reportKasFailure(error: string): void {
    this.lastError = error;
    this.kasLostSinceMs ??= this.now();
  }

  /** A tunnel stayed up or served a call: KAS is reachable. */
  reportKasReachable(): void {
    this.kasLostSinceMs = undefined;
  }

  /** Why the agent is not ready, or `undefined` when it is. */
  notReadyReason(): NotReadyReason {
    if (!this.registered) return "not registered with KAS yet";
    if (this.configCommitId === undefined) return "no configuration received yet";
    if (this.kasLostSinceMs !== undefined) {
      const lostMs = this.now() - this.kasLostSinceMs;
      if (lostMs >= this.kasLossTimeoutMs) return `KAS unreachable for ${Math.round(lostMs / 1000)} s: ${this.lastError ?? "unknown error"}`;
    }
    return undefined;
  }

  snapshot(): AgentHealthSnapshot {
    return { registered: this.registered, configCommitId: this.configCommitId, kasLostSinceMs: this.kasLostSinceMs, lastError: this.lastError };
  }
}
