import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import type { ExpiringHashes } from "../redis/expiring-hash.js";
import type { redisKeys } from "../redis/redis-keys.js";

/**
 * Which replicas hold tunnels of which agent, in Redis (GitLab's `tunnel_tracker2:kas_by_agent_id`
 * hashes): while this replica holds at least one tunnel (idle or busy) of an agent, the agent's
 * hash has a field named by this replica's private API URL. It is set when the first tunnel
 * arrives, removed when the last one ends and at shutdown, refreshed with the other owned fields,
 * and left to expire when the replica dies.
 */
export class RedisTunnelTracker {
  private stopWatching: (() => void) | undefined;

  constructor(
    private readonly hashes: ExpiringHashes,
    private readonly keys: ReturnType<typeof redisKeys>,
    /** This replica's private API URL, as the other replicas reach it. */
    readonly ownUrl: string,
  ) {}

  /** Registers the agents `registry` holds tunnels of, now and as they come and go. */
  track(registry: TunnelRegistry): void {
    this.stopWatching = registry.onPresenceChange((agentId, present) => {
      const key = this.keys.kasByAgentId(agentId);
      void (present ? this.hashes.set(key, this.ownUrl) : this.hashes.unset(key, this.ownUrl));
    });
    for (const agentId of registry.agentIds()) void this.hashes.set(this.keys.kasByAgentId(agentId), this.ownUrl);
  }

  /** Private API URLs of the other replicas holding tunnels of the agent. Throws when Redis fails. */
  async kasUrls(agentId: number): Promise<string[]> {
    const fields = await this.hashes.read(this.keys.kasByAgentId(agentId));
    return [...fields.keys()].filter((url) => url !== this.ownUrl);
  }

  /** Stops tracking; the registrations themselves go with `ExpiringHashes.clear`. */
  stop(): void {
    this.stopWatching?.();
    this.stopWatching = undefined;
  }
}
