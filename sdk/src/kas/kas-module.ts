import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ApiUnaryMethod } from "../grpc/api-unary-method.js";
import type { RawGrpcMethod } from "../grpc/raw-dispatch.js";
import type { PlatformClient } from "../platform-client/platform-client.js";
import type { AgentCalls } from "../tunnel/server/agent-calls.js";
import type { Tracing } from "../tracing/tracing.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import type { AgentAuthenticator } from "./agent-authenticator.js";
import type { AgentTracker } from "./agent-tracker.js";
import type { AgentConnectionsSource } from "../platform-client/connections.js";
import type { KasAuditLog } from "./audit-log.js";
import type { UsageMetrics } from "./usage-metrics.js";

/**
 * What KAS lends its modules (GitLab's modserver.Config): the platform, agent authentication, the
 * way to call agents through their tunnels, and KAS's logger, metrics and shutdown signal.
 */
export interface KasModuleContext {
  /** How KAS reaches the platform (agent_info, authorizations, configuration, module requests). */
  platform: PlatformClient;
  /** Agent token -> agent_info, cached; revocation signals. */
  auth: AgentAuthenticator;
  /** Connected agent processes (pod ids, versions) of this KAS. */
  tracker: AgentTracker;
  /** Connected agent processes of every replica (from Redis when several share it), else the tracker's. */
  connections: Required<AgentConnectionsSource>;
  /** Calls to a service of agent N through one of its tunnels (KAS -> agent). */
  agentCalls: AgentCalls;
  /** The tunnels themselves (counts, closing); modules call agents through `agentCalls`. */
  registry: TunnelRegistry;
  /** KAS's logger, with `module: <name>` bound. */
  logger: Logger;
  /** KAS's Prometheus registry. */
  metrics: Registry;
  /** Usage counters for the platform (GitLab's usage ping), sent by the usage_metrics module. */
  usage: UsageMetrics;
  /** The audit trail's KAS side: modules record events (the Kubernetes API proxy, each request). */
  audit: KasAuditLog;
  /** Spans and trace context propagation (KasServerOptions.tracing; no-ops unless set up). */
  tracing: Tracing;
  /** Aborted when KAS shuts down, after the grace period of calls in flight. */
  shutdownSignal: AbortSignal;
  /** Largest gRPC message KAS accepts or sends (KasServerOptions.maxMessageBytes). */
  maxMessageBytes: number;
}

/**
 * A feature's KAS half (GitLab's modserver.Module). It names itself as GitLab names the feature,
 * declares what it serves to agents and what it calls on them, and owns its lifecycle: services
 * are registered on the agent API before KAS listens, `start` runs once the agent API listens
 * (a module may open its own listeners there, as the Kubernetes API proxy does on 8154), `close`
 * runs when KAS shuts down.
 */
export interface KasModule {
  /** GitLab's module name, e.g. "kubernetes_api". Unique in one KAS. */
  readonly name: string;
  /** Services agents call on KAS (agent -> KAS), registered by `registerAgentServices`. */
  readonly agentServices?: readonly DescService[];
  /** Services this module calls on agents through their tunnels (KAS -> agent). */
  readonly tunnelServices?: readonly DescService[];
  /** The sections of the agent's configuration file (config.yaml) this module acts on, e.g. ["ci_access", "user_access"]. */
  readonly configSections?: readonly string[];
  /** Registers the module's agent-facing services on the agent API (connect-es: every protocol). */
  registerAgentServices?(router: ConnectRouter, ctx: KasModuleContext): void;
  /**
   * Methods served on the raw HTTP/2 stream ahead of connect-es (see `rawServerStreamingMethod`),
   * for long-lived streams every agent holds. They take gRPC over HTTP/2 only; the same methods
   * registered by `registerAgentServices` serve everything else. Called once, after
   * `registerAgentServices`; embedders that only mount the router never call it.
   */
  rawAgentMethods?(ctx: KasModuleContext): RawGrpcMethod[];
  /**
   * Unary methods KAS serves itself on its internal API (8153) for the platform (GitLab's
   * `Notifications/GitPushEvent`), behind the same JWT check as the tunnel gateway. Called once.
   */
  apiMethods?(ctx: KasModuleContext): ApiUnaryMethod[];
  /**
   * Starts the module's own work once the agent API listens: listeners, watches, timers. KAS
   * fails to start (and closes what started) when it throws.
   */
  start?(ctx: KasModuleContext): Promise<void>;
  /**
   * Where the module listens once started, by name (e.g. `{ k8sProxy: "https://…:8154" }`), for
   * KAS's start-up log.
   */
  addresses?(): Record<string, string>;
  /**
   * Stops what `start` started. KAS calls it at shutdown, with its own grace period, while calls
   * through tunnels drain; requests the module still runs after its grace end then.
   */
  close?(graceMs: number): Promise<void>;
}
