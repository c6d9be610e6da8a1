import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { AgentRegistrar, type RegisterRequest } from "../../../gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
import type { AgentInfo } from "../../../platform-client/platform-client.js";
import type { AgentAuthenticator } from "../../../kas/agent-authenticator.js";
import type { AgentTracker, EndWatch } from "../../../kas/agent-tracker.js";
import type { KasModule } from "../../../kas/kas-module.js";
import { kConnection, kConnectionClosed, onAbort, type ConnectionScope } from "../../../kas/connection-context.js";

/**
 * The KAS half of agent_registrar: agents register their process (pod id, version, pod) with
 * `AgentRegistrar/Register`; KAS's agent tracker lists it until the agent's connection closes or
 * its token is revoked.
 */
export function agentRegistrarServerModule(): KasModule {
  return {
    name: "agent_registrar",
    agentServices: [AgentRegistrar],
    registerAgentServices(router, ctx) {
      router.service(AgentRegistrar, agentRegistrarService(ctx));
    },
  };
}

/** The KAS half of `gitlab.agent.agent_registrar.rpc.AgentRegistrar/Register`. */
export function agentRegistrarService(deps: {
  auth: AgentAuthenticator;
  tracker: AgentTracker;
}): Partial<ServiceImpl<typeof AgentRegistrar>> {
  return {
    async register(req: RegisterRequest, ctx: HandlerContext) {
      const info = await deps.auth.authenticate(ctx.requestHeader, ctx.signal);
      const connection = ctx.values.get(kConnection) ?? signalScope(ctx.values.get(kConnectionClosed));
      deps.tracker.register(info, req.podId, req.agentMeta, untilClosedOrRevoked(deps.auth, info, connection));
      return {};
    },
  };
}

/**
 * The entry ends with the agent's connection, or at once when its token is revoked: two callbacks,
 * where signals (one per connection, combined per registration) cost kilobytes per agent. Built
 * outside the handler so that the entry's callbacks keep nothing of the call (its request, context).
 */
function untilClosedOrRevoked(auth: AgentAuthenticator, info: AgentInfo, connection: Pick<ConnectionScope, "onClose">): EndWatch {
  return (forget) => {
    const stopRevocation = auth.onRevoked(info, forget);
    if (!stopRevocation) {
      forget();
      return noop;
    }
    const stopClose = connection.onClose(forget);
    return () => {
      stopRevocation();
      stopClose();
    };
  };
}

/** For contexts without `kConnection` (an embedder's own contextValues hook). */
function signalScope(closed: AbortSignal): Pick<ConnectionScope, "onClose"> {
  return { onClose: (end) => onAbort(closed, end) };
}

function noop(): void {}
