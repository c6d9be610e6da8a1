import client, { type Registry } from "prom-client";
import type { AgentHealth } from "./agent-health.js";
import type { TunnelPool } from "../tunnel/agent/tunnel-pool.js";

/** The agent core's Prometheus metrics (docs/observability.md), registered on `registry`. */
export function createAgentMetrics(registry: Registry, sources: { pool: () => TunnelPool; health: AgentHealth }) {
  if (!registry.getSingleMetric("process_resident_memory_bytes")) client.collectDefaultMetrics({ register: registry });
  new client.Gauge({
    name: "agentk_tunnels",
    help: "Reverse tunnels to KAS, by state: idle (waiting for a request) or busy (serving one).",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      const s = sources.pool().stats();
      this.set({ state: "idle" }, s.idle);
      this.set({ state: "busy" }, s.active);
    },
  });
  const calls = new client.Counter({
    name: "agentk_tunnel_calls_total",
    help: "Calls KAS made to this agent through tunnels, by the module serving them and gRPC status code.",
    labelNames: ["module", "code"] as const,
    registers: [registry],
  });
  const reconnects = new client.Counter({
    name: "agentk_kas_reconnects_total",
    help: "Times the tunnel pool lost KAS and backed off before reconnecting, by gRPC status code.",
    labelNames: ["code"] as const,
    registers: [registry],
  });
  const configurations = new client.Counter({
    name: "agentk_configurations_applied_total",
    help: "Agent configurations received from KAS and applied to the modules.",
    registers: [registry],
  });
  new client.Gauge({
    name: "agentk_ready",
    help: "1 when the agent is ready (registered, configured, KAS not lost for too long), else 0.",
    registers: [registry],
    collect() {
      this.set(sources.health.notReadyReason() === undefined ? 1 : 0);
    },
  });
  return { calls, reconnects, configurations };
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;
