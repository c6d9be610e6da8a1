import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ConnectedAgentInfoSchema, type ConnectedAgentInfo } from "../gen/gitlab/agent/agent_tracker/agent_tracker_pb.js";
import type { AgentConnection } from "../platform-client/connections.js";

/** GitLab's ConnectedAgentInfo of one connection (Redis `agent_tracker2` values, AgentTracker RPC answers). */
export function connectedAgentInfo(c: AgentConnection): ConnectedAgentInfo {
  return create(ConnectedAgentInfoSchema, {
    agentMeta: { version: c.agentVersion, commitId: c.agentCommit, podName: c.podName, podNamespace: c.podNamespace },
    connectedAt: timestampFromDate(c.connectedAt),
    connectionId: BigInt(c.connectionId),
    agentId: BigInt(c.agentId),
    projectId: BigInt(c.projectId),
  });
}
