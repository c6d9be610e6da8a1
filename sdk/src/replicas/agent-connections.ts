import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ConnectedAgentInfoSchema } from "../gen/gitlab/agent/agent_tracker/agent_tracker_pb.js";
import { ConnectedAgentExtraSchema } from "../gen/kasbridge/replicas/v1/replicas_pb.js";
import type { AgentTracker } from "../kas/agent-tracker.js";
import { connectedAgentInfo } from "../kas/connected-agent-info.js";
import type { AgentConnection, AgentConnectionsSource } from "../platform-client/connections.js";
import type { ExpiringHashes } from "../redis/expiring-hash.js";
import type { redisKeys } from "../redis/redis-keys.js";

/**
 * The connected agent processes of every replica, in Redis (GitLab's `agent_tracker2` hashes): each
 * replica writes the connections its tracker lists (by agent, by project, and the agent in
 * `connected_agents`), removes them when they end, and lists an agent's connections from Redis,
 * so every replica answers the same. While Redis is down it answers with its own connections.
 */
export class RedisAgentConnections implements AgentConnectionsSource {
  /** Connection ids per agent listed by this replica (an agent stays in connected_agents while it has one). */
  private readonly local = new Map<number, Set<string>>();
  private stopObserving: (() => void) | undefined;

  constructor(
    private readonly hashes: ExpiringHashes,
    private readonly keys: ReturnType<typeof redisKeys>,
    private readonly tracker: AgentTracker,
  ) {}

  /** Writes the tracker's connections, now and as they come and go. */
  track(): void {
    this.stopObserving = this.tracker.observe({ registered: (c) => this.registered(c), forgotten: (c) => this.forgotten(c) });
    for (const connection of this.tracker.allConnections()) this.registered(connection);
  }

  stop(): void {
    this.stopObserving?.();
    this.stopObserving = undefined;
  }

  listConnections(agentId: number): Promise<AgentConnection[]> {
    return this.read(this.keys.connectionsByAgentId(agentId), () => this.tracker.listConnections(agentId));
  }

  listProjectConnections(projectId: number): Promise<AgentConnection[]> {
    return this.read(this.keys.connectionsByProjectId(projectId), () => this.tracker.listProjectConnections(projectId));
  }

  /** One of GitLab's connection hashes, oldest connection first; this replica's own while Redis is down. */
  private async read(key: Buffer, local: () => Promise<AgentConnection[]>): Promise<AgentConnection[]> {
    let fields: Map<string, Uint8Array>;
    try {
      fields = await this.hashes.read(key);
    } catch {
      return local();
    }
    const connections: AgentConnection[] = [];
    for (const bytes of fields.values()) {
      const connection = decodeConnection(bytes);
      if (connection) connections.push(connection);
    }
    return connections.sort((a, b) => a.connectedAt.getTime() - b.connectedAt.getTime());
  }

  private registered(connection: AgentConnection): void {
    const value = encodeConnection(connection);
    void this.hashes.set(this.keys.connectionsByAgentId(connection.agentId), connection.connectionId, value);
    void this.hashes.set(this.keys.connectionsByProjectId(connection.projectId), connection.connectionId, value);
    void this.hashes.set(this.keys.connectedAgents(), String(connection.agentId));
    let ids = this.local.get(connection.agentId);
    if (!ids) this.local.set(connection.agentId, (ids = new Set()));
    ids.add(connection.connectionId);
  }

  private forgotten(connection: AgentConnection): void {
    void this.hashes.unset(this.keys.connectionsByAgentId(connection.agentId), connection.connectionId);
    void this.hashes.unset(this.keys.connectionsByProjectId(connection.projectId), connection.connectionId);
    const ids = this.local.get(connection.agentId);
    ids?.delete(connection.connectionId);
    if (ids?.size === 0) {
      this.local.delete(connection.agentId);
      // As GitLab: no longer refreshed, it expires (another replica may still hold the agent).
      this.hashes.forget(this.keys.connectedAgents(), String(connection.agentId));
    }
  }
}

/** GitLab's ConnectedAgentInfo, followed by kasbridge's extra field (the holding KAS). */
export function encodeConnection(c: AgentConnection): Uint8Array {
  const info = toBinary(ConnectedAgentInfoSchema, connectedAgentInfo(c));
  const extra = toBinary(ConnectedAgentExtraSchema, create(ConnectedAgentExtraSchema, { kasInstance: c.kasInstance }));
  return Buffer.concat([info, extra]);
}

export function decodeConnection(bytes: Uint8Array): AgentConnection | undefined {
  try {
    const info = fromBinary(ConnectedAgentInfoSchema, bytes);
    const extra = fromBinary(ConnectedAgentExtraSchema, bytes);
    return {
      connectionId: info.connectionId.toString(),
      agentId: Number(info.agentId),
      projectId: Number(info.projectId),
      agentVersion: info.agentMeta?.version ?? "",
      agentCommit: info.agentMeta?.commitId ?? "",
      podName: info.agentMeta?.podName ?? "",
      podNamespace: info.agentMeta?.podNamespace ?? "",
      connectedAt: info.connectedAt ? timestampDate(info.connectedAt) : new Date(0),
      kasInstance: extra.kasInstance,
    };
  } catch {
    return undefined;
  }
}
