import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import pino, { type Logger } from "pino";
import { Registry } from "prom-client";
import type { AgentConfiguration } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { AgentMetaSchema } from "../gen/gitlab/agent/entity/entity_pb.js";
import { DEFAULT_MAX_MESSAGE_BYTES, TUNNEL_ENVELOPE_BYTES } from "../grpc/limits.js";
import { createAgentTransport, type AgentTransportOptions } from "../transport/agent-transport.js";
import { LocalServiceHost } from "../tunnel/agent/local-service-host.js";
import { TunnelPool, type TunnelPoolOptions } from "../tunnel/agent/tunnel-pool.js";
import { rawTunnelStreams } from "../tunnel/agent/tunnel-stream.js";
import { assertUniqueNames } from "../util/unique-names.js";
import { streamWindowBytes } from "../util/http2-windows.js";
import { AgentHealth } from "./agent-health.js";
import { createAgentMetrics } from "./agent-metrics.js";
import type { AgentModule, AgentModuleContext } from "./agent-module.js";
import { Tracing, type TracingOptions } from "../tracing/tracing.js";
import { defaultAgentModules } from "./default-modules.js";
import { createLeadership, type LeaderElectionOptions } from "./leadership.js";
import { randomPodId } from "./pod-id.js";

export interface AgentOptions {
  /** KAS agent API URL: grpc://, grpcs://, ws:// or wss://. */
  kasAddress: string;
  /** The agent token (glagent-...). Never logged. */
  token: string;
  logger?: Logger;
  /**
   * The features this agent runs, as GitLab names them. Default `defaultAgentModules()`:
   * agent_registrar, agent_configuration, observability and echo.
   */
  modules?: AgentModule[];
  /** Agent version and commit, reported to KAS. */
  version?: string;
  commit?: string;
  /** The pod this agent runs as (POD_NAME / POD_NAMESPACE in GitLab's chart). */
  podName?: string;
  podNamespace?: string;
  /** Largest message through the tunnel either way. Default 16 MiB. */
  maxMessageBytes?: number;
  /** Tunnel pool tuning (idle tunnels, growth, backoff). */
  pool?: Omit<TunnelPoolOptions, "transport" | "host" | "logger" | "onFailure">;
  /** Transport tuning: TLS CA, extra headers, ping interval. */
  transport?: Omit<AgentTransportOptions, "url" | "userAgent">;
  /**
   * Prometheus registry for the agent's metrics (`agentk_*`, docs/observability.md) and its
   * modules'. Default: a new one, served by the observability module's listener when it has one.
   */
  metrics?: Registry;
  /**
   * How long KAS may be unreachable before the agent is no longer ready (`/readiness`), in ms.
   * Default 60 000 ms.
   */
  kasLossTimeoutMs?: number;
  /**
   * OpenTelemetry tracing (docs/observability.md#tracing): the tracer provider and the propagator
   * of `traceparent`. Default: OpenTelemetry's global ones, no-ops until an application registers
   * real ones (`@kasbridge/sdk/otlp` sets up an OTLP exporter).
   */
  tracing?: TracingOptions;
  /** Called with each configuration the agent receives, after the modules applied it. */
  onConfiguration?(config: AgentConfiguration, commitId: string): void;
  /**
   * Leader election among the agent's pods (a Lease `agent-<agent id>-lock`, as GitLab's agentk),
   * for modules whose work must run on one pod only (`ctx.leadership`). Default: no election, this
   * process always leads (run one agent process per token).
   */
  leaderElection?: LeaderElectionOptions;
}

export interface Agent {
  readonly podId: bigint;
  readonly pool: TunnelPool;
  /** Readiness and the state of the link to KAS. */
  readonly health: AgentHealth;
  /** The registry the agent's and its modules' metrics are on. */
  readonly metrics: Registry;
  /** Connects and starts serving. */
  start(): void;
  /** Stops taking requests, lets in-flight ones finish for up to graceMs, then disconnects. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Assembles an agent from its modules: the tunnel pool serving the modules' services to KAS, and
 * the modules' own work (registration, configuration, ...), over one connection to KAS.
 */
export function createAgent(options: AgentOptions): Agent {
  const logger = options.logger ?? pino({ name: "agentk" });
  const version = options.version ?? "v16.0.0-kasbridge";
  const commit = options.commit ?? "";
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const modules = options.modules ?? defaultAgentModules();
  assertUniqueNames(modules, "agent modules");
  const agentTransport = createAgentTransport({
    // Tunnel traffic is mostly already-compact protobuf or bulk data; gzip costs more CPU than it
    // saves on the links agents use, so requests go uncompressed unless configured (KAS still
    // accepts gzip from agents that send it, as GitLab's agentk does).
    sendCompression: null,
    // Node's 64 KiB default stream window would cap KAS -> agent uploads at one window per round
    // trip; KAS advertises the same 4 MiB.
    http2Settings: { initialWindowSize: streamWindowBytes },
    ...options.transport,
    url: options.kasAddress,
    // The token goes on every call (not on the WebSocket handshake), raw tunnel streams included.
    callHeaders: { ...options.transport?.callHeaders, authorization: `Bearer ${options.token}` },
    userAgent: `gitlab-agent/${version}/${commit}`,
    readMaxBytes: maxMessageBytes + TUNNEL_ENVELOPE_BYTES,
    writeMaxBytes: maxMessageBytes + TUNNEL_ENVELOPE_BYTES,
  });
  const { transport, close: closeTransport } = agentTransport;
  const host = new LocalServiceHost({ maxMessageBytes });
  const podId = randomPodId();
  const agentMeta = create(AgentMetaSchema, {
    version,
    commitId: commit,
    podName: options.podName ?? "",
    podNamespace: options.podNamespace ?? "",
  });
  const shutdown = new AbortController();
  const failureListeners: Array<() => void> = [];
  const metricsRegistry = options.metrics ?? new Registry();
  const health = new AgentHealth({ kasLossTimeoutMs: options.kasLossTimeoutMs });
  // GitLab's grpc_level: its own level (default error), not following the root logger's.
  const grpcLogger = logger.child({ component: "grpc" }, { level: "error" });
  // The metrics read the pool (created below, after the modules' services) only when collected.
  const metrics = createAgentMetrics(metricsRegistry, { pool: () => pool, health });
  // Which module serves a service, to count calls by module.
  const moduleOfService = new Map<string, string>();
  const moduleOf = (methodName: string) => moduleOfService.get(methodName.slice(1, methodName.lastIndexOf("/"))) ?? "unknown";
  const tracing = new Tracing(options.tracing, "@kasbridge/sdk/agent");

  const leadership = createLeadership(
    options.leaderElection,
    { podName: agentMeta.podName, podNamespace: agentMeta.podNamespace, podId, shutdownSignal: shutdown.signal },
    logger.child({ component: "leader_election" }),
  );

  function applyConfiguration(config: AgentConfiguration, commitId: string): void {
    health.reportConfiguration(commitId);
    metrics.configurations.inc();
    // The Lease is named after the agent id, which the configuration carries.
    leadership.setAgentId(config.agentId);
    for (const module of modules) {
      try {
        module.applyConfiguration?.(config, commitId);
      } catch (error) {
        logger.error({ err: error, module: module.name, commitId }, "agent module failed to apply the configuration");
      }
    }
    options.onConfiguration?.(config, commitId);
  }

  const contexts = new Map<AgentModule, AgentModuleContext>();
  for (const module of modules) {
    const ctx: AgentModuleContext = {
      transport,
      logger: logger.child({ module: module.name }),
      rootLogger: logger,
      shutdownSignal: shutdown.signal,
      tracing,
      podId,
      agentMeta,
      metrics: metricsRegistry,
      health,
      grpcLogger,
      applyConfiguration,
      onTunnelFailure: (listener) => failureListeners.push(listener),
      leadership,
    };
    contexts.set(module, ctx);
    for (const { service, implementation } of module.services?.(ctx) ?? []) {
      host.register(service, implementation);
      moduleOfService.set(service.typeName, module.name);
    }
  }
  const pool = new TunnelPool({
    ...options.pool,
    transport,
    // Without user interceptors, tunnels are raw HTTP/2 streams on the transport's connection.
    openStream: rawTunnelStreams(agentTransport),
    host,
    logger,
    grpcLogger,
    tracing,
    moduleOf,
    onFailure: (error) => {
      metrics.reconnects.inc({ code: Code[error.code] });
      health.reportKasFailure(`tunnel: ${Code[error.code]}: ${error.rawMessage}`);
      for (const listener of failureListeners) listener();
    },
    onHealthy: () => health.reportKasReachable(),
    onCallEnd: (methodName, code) => {
      // "/pkg.Service/Method" -> the module that registered pkg.Service.
      metrics.calls.inc({ module: moduleOf(methodName), code: code === 0 ? "OK" : Code[code] });
    },
  });
  let started = false;

  return {
    podId,
    pool,
    health,
    metrics: metricsRegistry,
    start() {
      if (started) return;
      started = true;
      logger.info({ kas: options.kasAddress, podId: podId.toString(), version, modules: modules.map((m) => m.name) }, "agent starting");
      pool.start();
      for (const module of modules) {
        try {
          module.start?.(contexts.get(module)!);
        } catch (error) {
          logger.error({ err: error, module: module.name }, "agent module failed to start");
        }
      }
      leadership.start();
    },
    async stop(graceMs = 10_000) {
      shutdown.abort();
      await Promise.all([
        pool.stop(graceMs),
        // Leader work ends and the Lease is given up while the modules close.
        leadership.close(),
        ...modules.map((module) =>
          module.close?.().catch((error: unknown) => logger.error({ err: error, module: module.name }, "agent module failed to close")),
        ),
      ]);
      closeTransport();
      logger.info("agent stopped");
    },
  };
}
