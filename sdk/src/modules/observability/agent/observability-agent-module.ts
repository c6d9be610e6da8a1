import type { Logger } from "pino";
import type { AgentModule } from "../../../agent/agent-module.js";
import { log_level_enum } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { ListenerLimits } from "../../../transport/listener-limits.js";
import { createObservabilityServer, type ObservabilityServer } from "../observability-http-server.js";

const pinoLevels: Record<log_level_enum, string> = {
  [log_level_enum.info]: "info",
  [log_level_enum.debug]: "debug",
  [log_level_enum.warn]: "warn",
  [log_level_enum.error]: "error",
};

/**
 * agentk's observability listener's limits, GitLab's timeouts: a request head (and body) within
 * 1 000 ms (read timeout 1 s), idle keep-alive connections closed after 60 000 ms (idle 1 min),
 * at most 100 connections.
 */
export const AGENT_OBSERVABILITY_LIMITS = {
  maxConnections: 100,
  maxConcurrentStreams: 0,
  headersTimeoutMs: 1_000,
  idleTimeoutMs: 60_000,
} as const;

export interface ObservabilityAgentModuleOptions extends ListenerLimits {
  /**
   * Where to serve `/metrics`, `/liveness` and `/readiness` (agentk's `--observability-listen-address`,
   * GitLab's default `:8080`). Default: no listener.
   */
  listen?: { host: string; port: number };
  /** Serve HTTPS with this certificate and key (PEM): agentk's `--observability-{cert,key}-file`. */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

export interface ObservabilityAgentModule extends AgentModule {
  /** Resolves with the listener once it listens (undefined without `listen`); rejects when it cannot. */
  readonly listening: Promise<ObservabilityServer | undefined>;
}

/**
 * The agent half of observability: applies `observability.logging.level` (default `info`) and
 * `grpc_level` (default `error`) of each configuration to the agent's loggers, without a restart,
 * as agentk; with `listen`, serves the agent's metrics and probes, readiness being real
 * (`AgentHealth`: registered, configured, KAS not lost for too long).
 */
export function observabilityAgentModule(options: ObservabilityAgentModuleOptions = {}): ObservabilityAgentModule {
  let rootLogger: Logger | undefined;
  let grpcLogger: Logger | undefined;
  let logger: Logger | undefined;
  let server: Promise<ObservabilityServer | undefined> = Promise.resolve(undefined);
  let resolveListening: (s: Promise<ObservabilityServer | undefined>) => void = () => {};
  const listening = new Promise<ObservabilityServer | undefined>((resolve) => (resolveListening = resolve));
  const { listen, tls, ...limits } = options;
  return {
    name: "observability",
    configSections: ["observability"],
    listening,
    start(ctx) {
      rootLogger = ctx.rootLogger;
      grpcLogger = ctx.grpcLogger;
      logger = ctx.logger;
      if (listen) {
        server = createObservabilityServer({
          ...limits,
          host: listen.host,
          port: listen.port,
          tls,
          serverName: "gitlab-agent",
          defaultLimits: AGENT_OBSERVABILITY_LIMITS,
          requestTimeoutMs: AGENT_OBSERVABILITY_LIMITS.headersTimeoutMs,
          metrics: ctx.metrics,
          notReadyReason: () => ctx.health.notReadyReason(),
        });
        server.then(
          (s) => ctx.logger.info({ address: s?.address, url: s?.url }, "observability listening"),
          () => {},
        );
      }
      resolveListening(server);
    },
    applyConfiguration(config) {
      const logging = config.observability?.logging;
      setLevel(rootLogger, logging?.level ?? log_level_enum.info, "logLevel");
      setLevel(grpcLogger, logging?.grpcLevel ?? log_level_enum.error, "grpcLogLevel");
    },
    async close() {
      // A listener that never came up has nothing to close.
      await (await server.catch(() => undefined))?.close();
    },
  };

  function setLevel(target: Logger | undefined, configured: log_level_enum, field: "logLevel" | "grpcLogLevel"): void {
    if (!target) return;
    const level = pinoLevels[configured] ?? "info";
    if (target.level === level) return;
    target.level = level;
    logger?.info({ [field]: level }, field === "logLevel" ? "set the log level" : "set the gRPC log level");
  }
}
