import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { AgentHealth } from "./agent-health.js";
import type { AgentConfiguration } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { AgentMeta } from "../gen/gitlab/agent/entity/entity_pb.js";
import type { Leadership } from "./leadership.js";
import type { Tracing } from "../tracing/tracing.js";

/** A service an agent module serves to KAS through the tunnel, with its connect-es implementation. */
export interface ServedService {
  service: DescService;
  implementation: Parameters<ConnectRouter["service"]>[1];
}

/** What the agent lends its modules (GitLab's modagent.API). */
export interface AgentModuleContext {
  /** Transport to KAS for agent -> KAS RPCs (configuration, registration, gitlab_access). */
  transport: Transport;
  /** The agent's logger, with `module: <name>` bound. */
  logger: Logger;
  /** The agent's root logger (observability applies the configured log level to it). */
  rootLogger: Logger;
  /**
   * Logger for gRPC-level lines (tunnels taking requests), with its own level: GitLab's
   * `observability.logging.grpc_level`, default `error`.
   */
  grpcLogger: Logger;
  /** The agent's Prometheus registry; modules add their metrics here. */
  metrics: Registry;
  /** Readiness: modules report registration and KAS failures (agent_registrar), observability reads it. */
  health: AgentHealth;
  /** Aborted when the agent stops. */
  shutdownSignal: AbortSignal;
  /**
   * Spans and trace context propagation (AgentOptions.tracing; no-ops unless set up). A tunnel
   * call's handler finds its parent span's `traceparent` in the call's request headers.
   */
  tracing: Tracing;
  /** This agent process's random id (GitLab's pod_id). */
  podId: bigint;
  /** Version, commit and pod of this agent, as reported to KAS. */
  agentMeta: AgentMeta;
  /**
   * Hands a configuration the agent received to every module's `applyConfiguration` (and the
   * agent's `onConfiguration`). The agent_configuration module calls it.
   */
  applyConfiguration(config: AgentConfiguration, commitId: string): void;
  /** Calls `listener` each time the tunnel pool backs off after failures (KAS restarted, connection lost). */
  onTunnelFailure(listener: () => void): void;
  /**
   * The election among this agent's pods (GitLab's leader-only modules): `leadership.run(name,
   * work)` runs `work` only while this process leads (`AgentOptions.leaderElection`; without it,
   * this process always leads).
   */
  leadership: Leadership;
}

/**
 * A feature's agent half (GitLab's modagent.Module). It names itself as GitLab names the feature,
 * declares the services it serves to KAS through the tunnel and the configuration section it acts
 * on, and owns its lifecycle: `start` when the agent starts, `close` when it stops.
 */
export interface AgentModule {
  /** GitLab's module name, e.g. "kubernetes_api". Unique in one agent. */
  readonly name: string;
  /** The sections of the agent's configuration this module acts on, e.g. ["observability"]. */
  readonly configSections?: readonly string[];
  /** Services KAS may call on this agent through the tunnel (advertised in the tunnel descriptor). */
  services?(ctx: AgentModuleContext): ServedService[];
  /**
   * Starts the module's work (loops, watches) without waiting for it: the agent owns what it
   * starts until `close`. A throw is logged; the other modules run on.
   */
  start?(ctx: AgentModuleContext): void;
  /** A new configuration from KAS (each accepted commit, in order). */
  applyConfiguration?(config: AgentConfiguration, commitId: string): void;
  /** Ends what `start` started; called after the agent's shutdown signal aborted. */
  close?(): Promise<void>;
}
