import type { MetaMap } from "../../util/metadata.js";
import type { TunnelCall } from "./server-tunnel.js";
import type { TunnelRegistry } from "./tunnel-registry.js";

/**
 * How KAS calls a service of an agent (KAS -> agent): through whichever tunnel holds it. Modules
 * and the internal API gateway call agents through this, never through tunnels directly, so that
 * a directory of several KAS replicas (a call routed to the replica holding the agent's tunnels)
 * plugs in behind it.
 */
export interface AgentCalls {
  /**
   * Starts `method` ("/<service>/<method>") on an idle tunnel of `agentId` that serves it, waiting
   * for one until `signal` aborts (then UNAVAILABLE naming the agent). `meta` is the call's
   * request metadata.
   */
  start(agentId: number, method: string, meta: MetaMap, signal: AbortSignal): Promise<TunnelCall>;
}

/** Calls through the tunnels of this KAS's registry. */
export function localAgentCalls(registry: TunnelRegistry): AgentCalls {
  return {
    async start(agentId, method, meta, signal) {
      const tunnel = await registry.acquire(agentId, method, signal);
      return tunnel.start(method, meta);
    },
  };
}
