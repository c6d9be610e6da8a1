import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, Transport } from "@connectrpc/connect";
import pino, { type Logger } from "pino";
import { create } from "@bufbuild/protobuf";
import { AgentMetaSchema } from "../gen/gitlab/agent/entity/entity_pb.js";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { echoService } from "../modules/echo/agent/echo-service.js";
import { agentConfigurationWatcher } from "../modules/agent_configuration/agent/configuration-watcher.js";
import type { AgentConfiguration as AgentConfig } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { LocalServiceHost } from "../tunnel/agent/local-service-host.js";
import { TunnelPool, type TunnelPoolOptions } from "../tunnel/agent/tunnel-pool.js";
import { createAgentTransport, type AgentTransportOptions } from "../transport/agent-transport.js";
import { rawTunnelStreams } from "../tunnel/agent/tunnel-stream.js";
import { AgentRegistration, randomPodId } from "../modules/agent_registrar/agent/agent-registration.js";
import { streamWindowBytes } from "../util/http2-windows.js";

/** What a feature module's agent half gets. */
export interface AgentModuleContext {
  /** Transport to KAS for agent -> KAS RPCs (configuration, reporting). */
  transport: Transport;
  logger: Logger;
  shutdownSignal: AbortSignal;
}

/** A feature channel's agent half: services it serves through the tunnel, and background work. */
export interface AgentModule {
  name: string;
  /** Services KAS may call on this agent through the tunnel. */
  services?: Array<{ service: DescService; implementation: Parameters<ConnectRouter["service"]>[1] }>;
  /** Background work (e.g. watching configuration); resolves when `shutdownSignal` aborts. */
  run?(ctx: AgentModuleContext): Promise<void>;
}

export interface AgentOptions {
  /** KAS agent API URL: grpc://, grpcs://, ws:// or wss://. */
  kasAddress: string;
  /** The agent token (glagent-...). Never logged. */
  token: string;
  logger?: Logger;
  modules?: AgentModule[];
  /** Agent version and commit, reported to KAS. */
  version?: string;
  commit?: string;
  /** The pod this agent runs as (POD_NAME / POD_NAMESPACE in GitLab's chart). */
  podName?: string;
  podNamespace?: string;
  /** Serve kasbridge's diagnostics echo service through the tunnel. Default true. */
  serveEcho?: boolean;
  /** Largest message through the tunnel either way. Default 16 MiB. */
  maxMessageBytes?: number;
  /** Tunnel pool tuning (idle tunnels, growth, backoff). */
  pool?: Omit<TunnelPoolOptions, "transport" | "host" | "logger" | "onFailure">;
  /** Transport tuning: TLS CA, extra headers, ping interval. */
  transport?: Omit<AgentTransportOptions, "url" | "userAgent">;
  /** Re-registration interval. Default 300 000 ms (agentk). */
  registerIntervalMs?: number;
  /**
   * Receive the agent's configuration (GetConfiguration) and apply it: log level now, and every
   * configuration goes to `onConfiguration`. Default true.
   */
  watchConfiguration?: boolean;
  onConfiguration?(config: AgentConfig, commitId: string): void;
}

export interface Agent {
  readonly podId: bigint;
  readonly pool: TunnelPool;
  /** Connects and starts serving. */
  start(): void;
  /** Stops taking requests, lets in-flight ones finish for up to graceMs, then disconnects. */
  stop(graceMs?: number): Promise<void>;
}

/** Assembles an agent: tunnel pool serving the modules' services, registration, module loops. */
export function createAgent(options: AgentOptions): Agent {
  const logger = options.logger ?? pino({ name: "agentk" });
  const version = options.version ?? "v16.0.0-kasbridge";
  const commit = options.commit ?? "";
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
    readMaxBytes: (options.maxMessageBytes ?? 16 << 20) + 1024,
    writeMaxBytes: (options.maxMessageBytes ?? 16 << 20) + 1024,
  });
  const { transport, close: closeTransport } = agentTransport;
  const host = new LocalServiceHost({ maxMessageBytes: options.maxMessageBytes });
  const podId = randomPodId();
  if (options.serveEcho ?? true) host.register(EchoService, echoService(options.podName || `agent-${podId}`));
  for (const module of options.modules ?? []) {
    for (const { service, implementation } of module.services ?? []) host.register(service, implementation);
  }
  const meta = create(AgentMetaSchema, {
    version,
    commitId: commit,
    podName: options.podName ?? "",
    podNamespace: options.podNamespace ?? "",
  });
  const modules = [...(options.modules ?? [])];
  if (options.watchConfiguration ?? true) {
    modules.unshift(agentConfigurationWatcher({ logger, agentMeta: meta, onConfiguration: options.onConfiguration }));
  }
  const registration = new AgentRegistration(transport, meta, podId, logger, options.registerIntervalMs);
  const pool = new TunnelPool({
    ...options.pool,
    transport,
    // Without user interceptors, tunnels are raw HTTP/2 streams on the transport's connection.
    openStream: rawTunnelStreams(agentTransport),
    host,
    logger,
    onFailure: () => registration.registerSoon(),
  });
  const shutdown = new AbortController();
  const moduleRuns: Promise<void>[] = [];
  let started = false;

  return {
    podId,
    pool,
    start() {
      if (started) return;
      started = true;
      logger.info({ kas: options.kasAddress, podId: podId.toString(), version }, "agent starting");
      pool.start();
      registration.start();
      for (const module of modules) {
        if (!module.run) continue;
        moduleRuns.push(
          module.run({ transport, logger: logger.child({ module: module.name }), shutdownSignal: shutdown.signal }).catch((error: unknown) => {
            logger.error({ err: error, module: module.name }, "agent module failed");
          }),
        );
      }
    },
    async stop(graceMs = 10_000) {
      shutdown.abort();
      await Promise.all([pool.stop(graceMs), registration.stop(), ...moduleRuns]);
      closeTransport();
      logger.info("agent stopped");
    },
  };
}
