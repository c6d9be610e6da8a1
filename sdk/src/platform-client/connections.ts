/** One connected agent process, as KAS's agent tracker knows it. */
export interface AgentConnection {
  /** Random positive int63 the agent process picked at start (GitLab's pod_id), as a decimal string. */
  connectionId: string;
  agentId: number;
  projectId: number;
  agentVersion: string;
  agentCommit: string;
  podName: string;
  podNamespace: string;
  connectedAt: Date;
  /** Identifies the KAS instance holding the connection. */
  kasInstance: string;
}

/** Lists the connected agent processes of an agent; implemented by KAS's agent tracker. */
export interface AgentConnectionsSource {
  listConnections(agentId: number, signal?: AbortSignal): Promise<AgentConnection[]>;
  /** The connected processes of every agent whose configuration project is `projectId`, when the source can tell. */
  listProjectConnections?(projectId: number, signal?: AbortSignal): Promise<AgentConnection[]>;
}
