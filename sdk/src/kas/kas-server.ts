import { setMaxListeners } from "node:events";
import { hostname } from "node:os";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pino, { type Logger } from "pino";
import { Registry } from "prom-client";
import { ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { rawGrpcMethods } from "../grpc/raw-dispatch.js";
import { DEFAULT_MAX_MESSAGE_BYTES, TUNNEL_ENVELOPE_BYTES } from "../grpc/limits.js";
import { kasShuttingDownError } from "../grpc/status-errors.js";
import type { PlatformClient } from "../platform-client/platform-client.js";
import { createAgentApiListener, type AgentApiListener } from "../transport/agent-api-listener.js";
import type { AgentApiListenerOptions } from "../transport/agent-api-listener-options.js";
import { localAgentCalls, type AgentCalls } from "../tunnel/server/agent-calls.js";
import { listenGateway, type GatewayListener, type GatewayListenOptions } from "../tunnel/server/gateway-listener.js";
import { rawReverseTunnelStreams, reverseTunnelConnectPath, reverseTunnelService } from "../tunnel/server/reverse-tunnel-service.js";
import { createTunnelGateway } from "../tunnel/server/tunnel-gateway.js";
import { createPrivateApiGateway } from "../tunnel/server/private-api-gateway.js";
import type { AgentConnectionsSource } from "../platform-client/connections.js";
import { startKasReplicas, type KasRedisOptions, type KasReplicas } from "../replicas/kas-replicas.js";
import { InMemoryTunnelRegistry, type TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import { Tracing, type TracingOptions } from "../tracing/tracing.js";
import { hostPort } from "../util/host-port.js";
import { assertUniqueNames } from "../util/unique-names.js";
import { streamWindowBytes, widenConnectionWindow } from "../util/http2-windows.js";
import { waitUntil } from "../util/timers.js";
import { authenticateBeforeBody } from "./agent-auth-gate.js";
import { AgentAuthenticator } from "./agent-authenticator.js";
import { DEFAULT_CONNECTIONS_PER_TOKEN_PER_MINUTE, InMemoryConnectionLimiter } from "./connection-limiter.js";
import { AgentTracker, defaultKasInstanceId } from "./agent-tracker.js";
import { connectionContextValues } from "./connection-context.js";
import { internalApiAuthorizer, privateApiAuthorizer } from "./internal-api-auth.js";
import { defaultKasModules } from "./default-modules.js";
import { createKasMetrics } from "./kas-metrics.js";
import type { ApiUnaryMethod } from "../grpc/api-unary-method.js";
import type { KasModule, KasModuleContext } from "./kas-module.js";
import { KasAuditLog } from "./audit-log.js";
import { UsageMetrics } from "./usage-metrics.js";

export interface KasServerOptions {
  /** How KAS reaches the platform (agent_info, revocations, what the modules need). */
  platform: PlatformClient;
  logger?: Logger;
  /** Where idle tunnels are found. Default: in-memory (one KAS). */
  registry?: TunnelRegistry;
  /** How modules and the internal API call agents. Default: through `registry`'s tunnels. */
  agentCalls?: AgentCalls;
  /** The agent API listener (GitLab port 8150): host, port, TLS, HTTP/2 settings. */
  agentApi?: Omit<AgentApiListenerOptions, "handler" | "logger">;
  /** KAS's internal gRPC API (GitLab port 8153), where the platform calls agents through tunnels. */
  internalApi: Partial<GatewayListenOptions> & {
    /** Default 8153. */
    port?: number;
    /** HS256 secret of the platform's JWTs (aud gitlab-kas; any issuer, as GitLab). */
    jwtSecret: Uint8Array;
  };
  /**
   * KAS's private API (GitLab port 8155), where other KAS replicas call agents connected to this
   * one with GitLab's gateway sequence (`GatewayKasResponse`), authenticated with JWTs signed by
   * the private API secret (iss and aud gitlab-kas). It only routes to this replica's own tunnels.
   * Off when unset; required with `redis`.
   */
  privateApi?: Partial<GatewayListenOptions> & {
    /** Default 8155. */
    port?: number;
    /** HS256 secret shared by the KAS replicas (not the platform's). */
    jwtSecret: Uint8Array;
  };
  /**
   * Several replicas on one Redis: this replica registers its agents' tunnels and connections
   * there, lists connections from there, and routes calls for agents it holds no tunnel of to a
   * replica that does, through the private API. Off when unset (one KAS).
   */
  redis?: KasRedisOptions;
  /**
   * How long a call on the internal API waits for a tunnel of its agent (here or, with `redis`, on
   * any replica) unless its own deadline ends the wait first; then DEADLINE_EXCEEDED "Agent
   * connection not found. Is agent up to date and connected?". Default 20 000 ms (GitLab's).
   */
  tunnelFindTimeoutMs?: number;
  /** Largest gRPC message through a tunnel, either way. Default 16 MiB; larger: RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  /** Identity of this KAS process in connection listings. Default: host-pid-random. */
  kasInstance?: string;
  /** Prometheus registry for KAS's metrics. Default: a new one. */
  metrics?: Registry;
  /**
   * How many calls (tunnel streams, registrations, configuration streams) one agent token may open
   * per minute, across all replicas with `redis` (GitLab's `connections_per_token_per_minute`);
   * beyond it RESOURCE_EXHAUSTED. Default 40 000; 0 turns the limit off.
   */
  connectionsPerTokenPerMinute?: number;
  /** How long agent_info answers are cached. Default 60 000 ms (revocations evict at once). */
  agentInfoCacheTtlMs?: number;
  /**
   * OpenTelemetry tracing (docs/observability.md#tracing): the tracer provider and the propagator
   * of `traceparent`. Default: OpenTelemetry's global ones, no-ops until an application registers
   * real ones (`@kasbridge/sdk/otlp` sets up an OTLP exporter).
   */
  tracing?: TracingOptions;
  /** How often audit events go to the platform (`PlatformClient.recordAuditEvents`), in ms. Default 1 000. */
  auditFlushIntervalMs?: number;
  /**
   * The features this KAS serves, as GitLab names them (agent_registrar, agent_configuration,
   * kubernetes_api, gitlab_access, observability, ...). Default: agent_registrar only.
   */
  modules?: KasModule[];
}

export interface KasServer {
  readonly agentApi: AgentApiListener;
  readonly internalApiAddress: { host: string; port: number };
  /** Where the private (kas-to-kas) API listens, when enabled. */
  readonly privateApiAddress?: { host: string; port: number };
  readonly tracker: AgentTracker;
  /** Connected agent processes as the platform lists them: this replica's, or every replica's with `redis`. */
  readonly connections: Required<AgentConnectionsSource>;
  /** What the replicas share through Redis, with `redis`. */
  readonly replicas?: KasReplicas;
  readonly registry: TunnelRegistry;
  readonly agentCalls: AgentCalls;
  readonly auth: AgentAuthenticator;
  readonly metrics: Registry;
  /** Usage counters for the platform (the usage_metrics module sends them). */
  readonly usage: UsageMetrics;
  /** Audit events for the platform (the Kubernetes API proxy's requests, agent connections). */
  readonly audit: KasAuditLog;
  readonly kasInstance: string;
  /** Every listener by name ("agent", "internal", "private" and the modules'), as URLs. */
  readonly addresses: Record<string, string>;
  /** Stops accepting agents and calls, lets calls finish for up to graceMs, closes everything. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Assembles KAS from its modules: the agent API (the reverse tunnel, the modules' agent-facing
 * services), the internal and private API gateways (calls to agents through their tunnels), and
 * the modules' own work and listeners.
 */
export async function createKasServer(options: KasServerOptions): Promise<KasServer> {
  const logger = options.logger ?? pino({ name: "kas" });
  const registry = options.registry ?? new InMemoryTunnelRegistry();
  const metrics = options.metrics ?? new Registry();
  const kasInstance = options.kasInstance ?? defaultKasInstanceId();
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const modules = options.modules ?? defaultKasModules();
  assertUniqueNames(modules, "KAS modules");
  if (options.redis && !options.privateApi) throw new Error("KasServerOptions.redis needs privateApi: replicas call each other there");
  const shutdown = new AbortController();
  // Every open stream listens on the shutdown signal; hundreds are normal.
  setMaxListeners(0, shutdown.signal);
  const tracker = new AgentTracker({ kasInstance });
  const connectionLimit = options.connectionsPerTokenPerMinute ?? DEFAULT_CONNECTIONS_PER_TOKEN_PER_MINUTE;
  const localLimiter = connectionLimit > 0 ? new InMemoryConnectionLimiter(connectionLimit) : undefined;
  // With Redis, calls route across replicas once the private API listens (its URL is what the
  // other replicas reach this one at); until then, and without Redis, through local tunnels.
  let replicas: KasReplicas | undefined;
  const localCalls = localAgentCalls(registry);
  const agentCalls: AgentCalls = options.agentCalls ?? {
    start: (agentId, method, meta, signal) => (replicas?.agentCalls ?? localCalls).start(agentId, method, meta, signal),
  };
  const kasMetrics = createKasMetrics(metrics, { tunnels: registry, tracker });
  const auth = new AgentAuthenticator({
    platform: options.platform,
    logger,
    cacheTtlMs: options.agentInfoCacheTtlMs,
    // Across replicas once Redis is set up (below).
    limiter: localLimiter && { allow: (token) => (replicas?.connectionLimiter ?? localLimiter).allow(token) },
    onRateLimited: () => kasMetrics.rateLimited(),
  });
  const usage = new UsageMetrics();
  const tracing = new Tracing(options.tracing, "@kasbridge/sdk/kas");
  const audit = new KasAuditLog({ platform: options.platform, logger, metrics, flushIntervalMs: options.auditFlushIntervalMs });
  // Agent activity for the audit trail: each agent process's connection, as the tracker sees it.
  if (audit.enabled) {
    tracker.onChange((change, c) =>
      audit.record({
        kind: change === "registered" ? "agent_connected" : "agent_disconnected",
        at: new Date().toISOString(),
        agent_id: c.agentId,
        connection_id: c.connectionId,
        pod_name: c.podName,
        pod_namespace: c.podNamespace,
        agent_version: c.agentVersion,
        kas_instance: c.kasInstance,
      }),
    );
  }
  // Every replica's connections once Redis is set up (below), this KAS's until then.
  const connections: Required<AgentConnectionsSource> = {
    listConnections: (agentId, signal) => (replicas?.connections ?? tracker).listConnections(agentId, signal),
    listProjectConnections: (projectId, signal) => (replicas?.connections ?? tracker).listProjectConnections(projectId, signal),
  };
  const contexts = new Map<KasModule, KasModuleContext>();
  for (const module of modules) {
    contexts.set(module, {
      platform: options.platform,
      auth,
      tracker,
      connections,
      agentCalls,
      registry,
      logger: logger.child({ module: module.name }),
      metrics,
      usage,
      audit,
      tracing,
      shutdownSignal: shutdown.signal,
      maxMessageBytes,
    });
  }

  // Tunnel frames wrap a message with a few bytes of envelope.
  const tunnelDeps = { auth, registry, logger, shutdownSignal: shutdown.signal, maxMessageBytes: maxMessageBytes + TUNNEL_ENVELOPE_BYTES };
  const connectHandler = connectNodeAdapter({
    readMaxBytes: maxMessageBytes + TUNNEL_ENVELOPE_BYTES,
    writeMaxBytes: maxMessageBytes + TUNNEL_ENVELOPE_BYTES,
    shutdownSignal: shutdown.signal,
    contextValues: connectionContextValues,
    routes(router) {
      router.service(ReverseTunnel, reverseTunnelService(tunnelDeps));
      for (const module of modules) module.registerAgentServices?.(router, contexts.get(module)!);
    },
  });
  const agentApi = await createAgentApiListener({
    ...options.agentApi,
    http2Settings: { initialWindowSize: streamWindowBytes, ...options.agentApi?.http2Settings },
    // Strangers' bodies are not read: the token is checked from the headers first.
    handler: authenticateBeforeBody(connectHandler, auth, logger.child({ component: "agent-api" })),
    // gRPC tunnels (and modules' long-lived streams) over HTTP/2 bypass connect-es and Node's
    // compatibility layer: an idle stream then costs about a KiB of heap, not tens.
    streamHandler: rawGrpcMethods([
      { path: reverseTunnelConnectPath, handle: rawReverseTunnelStreams(tunnelDeps) },
      ...modules.flatMap((module) => module.rawAgentMethods?.(contexts.get(module)!) ?? []),
    ]),
    logger: logger.child({ component: "agent-api" }),
  });
  agentApi.onSessionOpen((session) => widenConnectionWindow(session));

  const apiMethods = modules.flatMap((module) => module.apiMethods?.(contexts.get(module)!) ?? []);
  const gatewayFor = (authorize: (headers: Headers) => Promise<void>, localMethods?: ApiUnaryMethod[]) =>
    createTunnelGateway({
      agentCalls,
      logger,
      tracing,
      maxMessageBytes,
      defaultTunnelWaitMs: options.tunnelFindTimeoutMs,
      authorize,
      localMethods,
      onCallEnd: ({ code, durationMs }) => kasMetrics.callEnded(code, durationMs),
    });
  const gateways: GatewayListener[] = [];
  const started: KasModule[] = [];
  const addresses: Record<string, string> = { agent: agentApi.url() };
  let internalApi: GatewayListener;
  let privateApi: GatewayListener | undefined;
  try {
    internalApi = await listenGateway(
      "internal API",
      { ...options.internalApi, port: options.internalApi.port ?? 8153 },
      gatewayFor(internalApiAuthorizer(options.internalApi.jwtSecret), apiMethods),
      logger,
    );
    gateways.push(internalApi);
    addresses.internal = `grpc://${hostPort(internalApi.address.host, internalApi.address.port)}`;
    if (options.privateApi) {
      privateApi = await listenGateway(
        "private API",
        { ...options.privateApi, port: options.privateApi.port ?? 8155 },
        createPrivateApiGateway({
          registry,
          logger,
          maxMessageBytes,
          authorize: privateApiAuthorizer(options.privateApi.jwtSecret),
          onCallEnd: ({ code, durationMs }) => kasMetrics.callEnded(code, durationMs),
        }),
        logger,
      );
      gateways.push(privateApi);
      addresses.private = `${options.privateApi.tls ? "grpcs" : "grpc"}://${hostPort(privateApi.address.host, privateApi.address.port)}`;
      if (options.redis) {
        replicas = startKasReplicas(
          { ...options.redis, ownPrivateApiUrl: options.redis.ownPrivateApiUrl ?? reachableUrl(addresses.private) },
          {
            registry,
            tracker,
            logger,
            privateApiSecret: options.privateApi.jwtSecret,
            maxMessageBytes,
            connectionsPerTokenPerMinute: connectionLimit,
            onRouted: ({ via, waitMs }) => kasMetrics.routed(via, waitMs),
          },
        );
      }
    }
    for (const module of modules) {
      if (!module.start) continue;
      await module.start(contexts.get(module)!);
      started.push(module);
      Object.assign(addresses, module.addresses?.());
    }
  } catch (error) {
    shutdown.abort();
    await Promise.all([agentApi.close(0), ...gateways.map((g) => g.close()), ...started.map((m) => m.close?.(0))]);
    replicas?.close();
    auth.close();
    await audit.close(0);
    throw error;
  }
  logger.info({ ...addresses, kasInstance, modules: modules.map((m) => m.name) }, "KAS listening");

  let closing: Promise<void> | undefined;
  return {
    agentApi,
    internalApiAddress: internalApi.address,
    privateApiAddress: privateApi?.address,
    tracker,
    connections,
    replicas,
    registry,
    agentCalls,
    auth,
    metrics,
    usage,
    audit,
    kasInstance,
    addresses,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        // Other replicas stop routing calls here; agents reconnect to them and register there.
        await replicas?.withdraw();
        // The modules stop taking requests and end theirs after their grace, which frees tunnels.
        const modulesClosed = Promise.all(
          [...started].reverse().map((m) => m.close?.(graceMs).catch((error: unknown) => logger.error({ err: error, module: m.name }, "module close failed"))),
        );
        // Idle tunnels go at once (not those handed out for a call about to start); new streams
        // and connections are refused (GOAWAY) from here.
        registry.closeTunnels((tunnel) => !tunnel.isTaken && !tunnel.reserved, kasShuttingDownError());
        const agentApiClosed = agentApi.close(graceMs);
        const gatewaysClosed = Promise.all(gateways.map((g) => g.close()));
        // Calls in flight get the grace period to finish: through this replica's tunnels, and
        // those arriving on the internal and private APIs (routed to other replicas, or waiting
        // for a tunnel of an agent that is moving to another replica).
        await waitUntil(() => registry.stats().busyTunnels === 0 && gateways.every((g) => g.activeCalls === 0), graceMs);
        shutdown.abort();
        registry.closeTunnels(() => true, kasShuttingDownError());
        for (const g of gateways) g.destroySessions();
        await Promise.all([agentApiClosed, gatewaysClosed, modulesClosed]);
        replicas?.close();
        auth.close();
        // Last: what the modules recorded while they closed goes too.
        await audit.close();
      })();
      return closing;
    },
  };
}

/** A listening URL as other hosts reach it: a wildcard address becomes this machine's name. */
function reachableUrl(listening: string): string {
  const u = new URL(listening);
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]") u.hostname = hostname();
  return `${u.protocol}//${u.host}`;
}
