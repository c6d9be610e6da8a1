/** GitLab's default prefix of every KAS key in Redis (`redis.key_prefix`). */
export const DEFAULT_REDIS_KEY_PREFIX = "gitlab-kas";

/** An int64 id as GitLab puts it in keys: 8 bytes, little-endian (binary, not text). */
export function int64Key(prefix: string, id: number | bigint): Buffer {
  const head = Buffer.from(prefix, "utf8");
  const key = Buffer.allocUnsafe(head.length + 8);
  head.copy(key);
  key.writeBigInt64LE(BigInt(id), head.length);
  return key;
}

/**
 * The keys of GitLab KAS v16 (replicas of both can share one Redis): `<prefix>:tunnel_tracker2:…`
 * and `<prefix>:agent_tracker2:…` hashes, the `<prefix>:agent_limit:…` counters.
 */
export function redisKeys(prefix: string) {
  return {
    /** HASH private API URL of each replica holding tunnels of the agent -> ExpiringValue{}. */
    kasByAgentId: (agentId: number) => int64Key(`${prefix}:tunnel_tracker2:kas_by_agent_id:`, agentId),
    /** HASH connection id -> ExpiringValue{ConnectedAgentInfo}. */
    connectionsByAgentId: (agentId: number) => int64Key(`${prefix}:agent_tracker2:conn_by_agent_id:`, agentId),
    /** HASH connection id -> ExpiringValue{ConnectedAgentInfo}. */
    connectionsByProjectId: (projectId: number) => int64Key(`${prefix}:agent_tracker2:conn_by_project_id:`, projectId),
    /** HASH agent id -> ExpiringValue{}. */
    connectedAgents: () => Buffer.from(`${prefix}:agent_tracker2:connected_agents`),
    /** STRING counter of one token's agent connections in one minute of the hour. */
    agentLimit: (tokenKey: Buffer, minute: number) =>
      Buffer.concat([Buffer.from(`${prefix}:agent_limit:`), tokenKey, Buffer.from([0x3a, minute])]),
    /** Pub/sub channel of kasbridge's events between replicas (revocations, configuration changes). */
    replicaEvents: () => `${prefix}:kasbridge:replica_events`,
  };
}
