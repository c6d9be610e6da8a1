import client, { type Registry } from "prom-client";
import type { AgentTracker } from "./agent-tracker.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";

/** KAS's Prometheus metrics, registered on `registry`. */
export function createKasMetrics(registry: Registry, sources: { tunnels: TunnelRegistry; tracker: AgentTracker }) {
  // Process metrics (memory, CPU, event loop lag, open handles), as every Prometheus target has.
  if (!registry.getSingleMetric("process_resident_memory_bytes")) client.collectDefaultMetrics({ register: registry });
  const calls = new client.Counter({
    name: "kas_tunnel_calls_total",
    help: "Calls forwarded to agents through tunnels, by gRPC status code.",
    labelNames: ["code"] as const,
    registers: [registry],
  });
  const callDuration = new client.Histogram({
    name: "kas_tunnel_call_duration_seconds",
    help: "Duration of calls forwarded to agents through tunnels.",
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
    registers: [registry],
  });
  new client.Gauge({
    name: "kas_tunnels",
    help: "Open reverse tunnels, by state.",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      const s = sources.tunnels.stats();
      this.set({ state: "idle" }, s.idleTunnels);
      this.set({ state: "busy" }, s.busyTunnels);
    },
  });
  new client.Gauge({
    name: "kas_connected_agents",
    help: "Agents with at least one open tunnel on this KAS.",
    registers: [registry],
    collect() {
      this.set(sources.tunnels.stats().agents);
    },
  });
  new client.Gauge({
    name: "kas_agent_connections",
    help: "Registered agent processes (pods) connected to this KAS.",
    registers: [registry],
    collect() {
      this.set(sources.tracker.count());
    },
  });
  const routing = new client.Histogram({
    name: "kas_routing_duration_seconds",
    help: "Time to find a tunnel for a call with several replicas, by where it was found: this replica (local) or another (peer).",
    labelNames: ["via"] as const,
    buckets: [0.001, 0.004, 0.016, 0.064, 0.256, 1.024, 4.096, 16.384],
    registers: [registry],
  });
  const rateExceeded = new client.Counter({
    name: "kas_agent_connection_rate_exceeded_total",
    help: "Agent calls refused because their token opened more than connections_per_token_per_minute (GitLab: agent_server_rate_exceeded_total).",
    registers: [registry],
  });
  return {
    rateLimited() {
      rateExceeded.inc();
    },
    routed(via: "local" | "peer", waitMs: number) {
      routing.observe({ via }, waitMs / 1000);
    },
    callEnded(code: number, durationMs: number) {
      calls.inc({ code: String(code) });
      callDuration.observe(durationMs / 1000);
    },
  };
}
