import { Code, ConnectError } from "@connectrpc/connect";
import { AgentTracker as AgentTrackerService, type GetConnectedAgentsRequest } from "../../../gen/gitlab/agent/agent_tracker/rpc/rpc_pb.js";
import { apiUnaryMethod } from "../../../grpc/api-unary-method.js";
import { connectedAgentInfo } from "../../../kas/connected-agent-info.js";
import type { KasModule } from "../../../kas/kas-module.js";
import type { AgentConnection } from "../../../platform-client/connections.js";

/**
 * KAS half of `gitlab.agent.agent_tracker.rpc.AgentTracker/GetConnectedAgents` on the internal API
 * (8153, the platform's JWT): GitLab's Rails asks which agentk processes are connected, for one
 * agent or for every agent of a configuration project. With several replicas the answer comes from
 * Redis (GitLab's `agent_tracker2` hashes), so every replica gives the same one.
 */
export function agentTrackerServerModule(): KasModule {
  return {
    name: "agent_tracker",
    apiMethods(ctx) {
      return [
        apiUnaryMethod({
          method: AgentTrackerService.method.getConnectedAgents,
          async handle(request: GetConnectedAgentsRequest, signal) {
            const r = request.request;
            let connections: AgentConnection[];
            if (r.case === "agentId") connections = await ctx.connections.listConnections(positiveId(r.value, "AgentId"), signal);
            else if (r.case === "projectId") connections = await ctx.connections.listProjectConnections(positiveId(r.value, "ProjectId"), signal);
            // GitLab's validator words it so.
            else throw new ConnectError("invalid GetConnectedAgentsRequest.Request: value is required", Code.InvalidArgument);
            return { agents: connections.map(connectedAgentInfo) };
          },
        }),
      ];
    },
  };
}

function positiveId(id: bigint, field: string): number {
  if (id <= 0n || id > BigInt(Number.MAX_SAFE_INTEGER)) throw new ConnectError(`invalid GetConnectedAgentsRequest.${field}: value must be greater than 0`, Code.InvalidArgument);
  return Number(id);
}
