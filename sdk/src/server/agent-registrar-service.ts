import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { AgentRegistrar, RegisterRequest } from "../gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
import type { AgentAuthenticator } from "./agent-authenticator.js";
import type { AgentTracker } from "./agent-tracker.js";
import { kConnectionClosed } from "./connection-context.js";

/** The KAS half of `gitlab.agent.agent_registrar.rpc.AgentRegistrar/Register`. */
export function agentRegistrarService(deps: {
  auth: AgentAuthenticator;
  tracker: AgentTracker;
}): Partial<ServiceImpl<typeof AgentRegistrar>> {
  return {
    async register(req: RegisterRequest, ctx: HandlerContext) {
      const info = await deps.auth.authenticate(ctx.requestHeader, ctx.signal);
      // The entry ends with the agent's connection, or at once when its token is revoked.
      const watch = deps.auth.watchToken(info);
      const ended = AbortSignal.any([ctx.values.get(kConnectionClosed), watch.signal]);
      deps.tracker.register(info, req.podId, req.agentMeta, ended, watch.release);
      return {};
    },
  };
}
