import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import {
  bootstrapAdmin,
  createGitPushNotifier,
  createInProcessPlatformClient,
  createPlatformApp,
  createPlatformServices,
  DEFAULT_WORKSPACE_TOOL_IMAGES,
  openStore,
  startAuditPruning,
  type PlatformServices,
  type Store,
} from "@kasbridge/platform";
import { ensureSecretFile, loadSecretFile } from "@kasbridge/sdk/auth";
import { createKasServer, type KasServerOptions } from "@kasbridge/sdk/kas";
import { startOtlpTracing, type OtlpTracing } from "@kasbridge/sdk/otlp";
import { agentConfigurationServerModule } from "@kasbridge/sdk/modules/agent_configuration/server";
import { agentRegistrarServerModule } from "@kasbridge/sdk/modules/agent_registrar/server";
import { agentTrackerServerModule } from "@kasbridge/sdk/modules/agent_tracker/server";
import { configurationProjectServerModule } from "@kasbridge/sdk/modules/configuration_project/server";
import { gitlabAccessServerModule } from "@kasbridge/sdk/modules/gitlab_access/server";
import { kubernetesApiServerModule } from "@kasbridge/sdk/modules/kubernetes_api/server";
import { observabilityServerModule } from "@kasbridge/sdk/modules/observability/server";
import { fluxServerModule } from "@kasbridge/sdk/modules/flux/server";
import { gitopsServerModule } from "@kasbridge/sdk/modules/gitops/server";
import {
  InMemoryGitPushEvents,
  notificationsServerModule,
  RedisGitPushEvents,
  type GitPushEvents,
} from "@kasbridge/sdk/modules/notifications/server";
import { usageMetricsServerModule } from "@kasbridge/sdk/modules/usage_metrics/server";
import { workspacesProxyServerModule } from "@kasbridge/sdk/modules/workspaces_proxy/server";
import { createHttpPlatformClient, type PlatformClient } from "@kasbridge/sdk/platform-client";
import { redisKeys, RedisReplicaEvents, replicatedPlatformClient } from "@kasbridge/sdk/replicas";
import { applyHttp1Limits } from "@kasbridge/sdk/transport";
import { hostPort, listen } from "@kasbridge/sdk/util";
import { MAX_PUSH_SETTING, MAX_REQUEST_BODY_SETTING, type KasConfig, type TlsFiles } from "./config.js";
import { openRedis, type RedisConnections } from "./redis-connections.js";

export interface RunningKas {
  addresses: Record<string, string>;
  close(): Promise<void>;
}

/** Starts the embedded platform (store, REST, internal API) and KAS with its modules. */
export async function startKas(config: KasConfig, logger: Logger, options: { metrics?: KasServerOptions["metrics"] } = {}): Promise<RunningKas> {
  // Holds the database, the shared secret and the admin token: owner only.
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const closer of closers.reverse()) await closer().catch((error: unknown) => logger.error({ err: error }, "close failed"));
  };
  try {
    const secretFile = config.apiSecretFile ?? join(config.dataDir, ".gitlab_kas_secret");
    const jwtSecret = config.apiSecretFile ? await loadSecretFile(secretFile) : (await ensureSecretFile(secretFile)).secret;
    // KAS replicas authenticate to each other's private API with their own secret, not the platform's.
    const privateSecretFile = config.privateApiSecretFile ?? join(config.dataDir, ".gitlab_kas_private_api_secret");
    const privateJwtSecret = config.privateApiSecretFile
      ? await loadSecretFile(privateSecretFile)
      : (await ensureSecretFile(privateSecretFile)).secret;

    // Spans over OTLP (observability.tracing): shut down last (closers run in reverse), so the
    // spans of the shutdown itself go out too.
    let tracing: OtlpTracing | undefined;
    if (config.tracing) {
      const started = await startOtlpTracing({
        serviceName: "kas",
        endpoint: config.tracing.otlpEndpoint,
        tokenSecretFile: config.tracing.otlpTokenSecretFile,
        caCertificateFile: config.tracing.otlpCaCertificateFile,
        logger: logger.child({ component: "tracing" }),
      });
      tracing = started;
      closers.push(() => started.shutdown());
    }

    let store: Store | undefined;
    let services: PlatformServices | undefined;
    if (config.platformEnabled) {
      ({ store, services } = await startPlatformServices(config, logger, options.metrics, jwtSecret));
      const opened = store;
      closers.push(() => opened.close());
      // Expired audit entries go at start and hourly, also on an instance with no new entries.
      const pruning = startAuditPruning(services.audit, { logger: logger.child({ component: "audit" }) });
      closers.push(() => pruning.stop());
    }
    let redis: RedisConnections | undefined;
    if (config.redis) {
      const opened = await openRedis(config.redis, logger.child({ component: "redis" }));
      redis = opened;
      closers.push(() => opened.close());
    }
    let platform: PlatformClient = config.platformUrl
      ? createHttpPlatformClient({ baseUrl: config.platformUrl, jwtSecret, logger: logger.child({ component: "platform-client" }) })
      : services
        ? createInProcessPlatformClient(services, { maxModuleRequestBytes: config.maxRequestBodyBytes })
        : fail("KAS_PLATFORM_URL is required when the embedded platform is disabled");
    if (redis && !config.platformUrl) {
      // The embedded platform's revocations and configuration changes happen in the replica that
      // made them: the others hear of them on Redis (a platform over HTTP is watched by each).
      const events = new RedisReplicaEvents({
        publisher: redis.client,
        subscriber: redis.subscriber,
        channel: redisKeys(redis.keyPrefix).replicaEvents(),
        logger: logger.child({ component: "replica-events" }),
      });
      await events.start();
      const replicated = replicatedPlatformClient(platform, events);
      closers.push(async () => {
        replicated.close();
        await events.close();
      });
      platform = replicated;
    }

    // Pushes the platform reports (Notifications/GitPushEvent) reach the Flux and GitOps streams
    // through this: in-process, or on Redis' kas_events channel for every replica.
    let gitPushEvents: GitPushEvents = new InMemoryGitPushEvents(logger);
    if (redis) {
      // The same connections as the replicas' registries (one Redis setting).
      const events = new RedisGitPushEvents({ publisher: redis.client, subscriber: redis.subscriber, logger: logger.child({ component: "kas-events" }) });
      closers.push(() => events.close());
      const subscribed = events.start();
      // While Redis is down at start, the subscription is made when it connects.
      if (redis.subscriber.status === "ready") await subscribed;
      else subscribed.catch((error: unknown) => logger.warn({ err: (error as Error).message }, "kas_events subscription failed"));
      gitPushEvents = events;
    }
    // Kubernetes API proxy (8154): kubectl only sends tokens over TLS, so the proxy serves TLS
    // (HTTP/2 + HTTP/1.1 by ALPN) with its own certificate, or the agent API's when it has none.
    const kubernetesApi = kubernetesApiServerModule({
      tls: readTls(config.k8sProxyTls ?? config.agentTls),
      host: config.listen.k8sProxy.host,
      port: config.listen.k8sProxy.port,
      urlPathPrefix: config.k8sProxyUrlPathPrefix,
      reauthorizeIntervalMs: config.k8sProxyReauthorizeIntervalSeconds * 1000,
      // Watches and `logs -f` never end by themselves: they get 2 s, not KAS's full grace.
      shutdownGraceMs: 2_000,
      ...config.limits.k8sProxy,
    });
    const addresses: Record<string, string> = {};
    // Workspace proxy (kasbridge): `<port>-<workspace>.<dns_zone>` with the platform's login for browsers.
    const workspacesProxy = config.workspacesProxyEnabled
      ? workspacesProxyServerModule({
          tls: readTls(config.workspacesProxyTls),
          host: config.listen.workspacesProxy.host,
          port: config.listen.workspacesProxy.port,
          platformUrl: () => config.workspacesProxyLoginUrl ?? config.externalUrl ?? config.platformUrl ?? addresses.platform,
          // IDEs' WebSockets never end by themselves: they get 2 s, not KAS's full grace.
          shutdownGraceMs: 2_000,
          ...config.limits.workspacesProxy,
        })
      : undefined;
    const kas = await createKasServer({
      platform,
      logger,
      tracing: tracing?.tracing,
      metrics: options.metrics,
      maxMessageBytes: config.maxMessageBytes,
      agentApi: { host: config.listen.agent.host, port: config.listen.agent.port, tls: readTls(config.agentTls), ...config.limits.agent },
      connectionsPerTokenPerMinute: config.connectionsPerTokenPerMinute,
      internalApi: { host: config.listen.internal.host, port: config.listen.internal.port, jwtSecret, ...config.limits.internal },
      privateApi: {
        ...config.limits.private,
        host: config.listen.private.host,
        port: config.listen.private.port,
        jwtSecret: privateJwtSecret,
        tls: readTls(config.privateTls),
      },
      redis: redis && {
        client: redis.client,
        keyPrefix: redis.keyPrefix,
        ownPrivateApiUrl: config.ownPrivateApiUrl,
        privateApiCa: config.privateTlsCaFile ? readFileSync(config.privateTlsCaFile) : undefined,
      },
      modules: [
        // Usage counters to the platform every period, and once more at shutdown.
        usageMetricsServerModule({ periodMs: config.usageReportingPeriodSeconds * 1000 }),
        notificationsServerModule({ events: gitPushEvents }),
        fluxServerModule({ platform, events: gitPushEvents }),
        gitopsServerModule({ platform, events: gitPushEvents }),
        agentRegistrarServerModule(),
        agentTrackerServerModule(),
        configurationProjectServerModule({ platform }),
        agentConfigurationServerModule({ gitlabExternalUrl: config.externalUrl }),
        kubernetesApi,
        gitlabAccessServerModule(),
        observabilityServerModule({ host: config.listen.observability.host, port: config.listen.observability.port, ...config.limits.observability }),
        ...(workspacesProxy ? [workspacesProxy] : []),
      ],
    });
    closers.push(() => kas.close());
    Object.assign(addresses, kas.addresses);
    const k8sProxyUrl = config.k8sProxyExternalUrl ?? proxyUrlForClients(kubernetesApi.url, config.externalUrl);
    if (k8sProxyUrl.startsWith("http:")) {
      logger.warn({ url: k8sProxyUrl }, "the Kubernetes API proxy has no TLS: kubectl does not send tokens over plain HTTP (set KAS_K8S_PROXY_TLS_CERT_FILE/KEY_FILE)");
    }

    if (services) {
      // After every push the platform tells KAS, as GitLab's Rails does (NotifyGitPushWorker).
      const platformServices = services;
      const notifier = createGitPushNotifier({
        kasInternalUrl: `grpc://${hostPort(connectableHost(kas.internalApiAddress.host), kas.internalApiAddress.port)}`,
        jwtSecret,
        projectPath: async (projectId) => (await platformServices.projects.get(projectId))?.pathWithNamespace,
        logger: logger.child({ component: "git-push-notifier" }),
      });
      const stopNotifying = services.repositories.enabled ? services.repositories.onPush((event) => notifier.pushed(event)) : () => {};
      closers.push(async () => {
        stopNotifying();
        await notifier.close();
      });
      const app = createPlatformApp({
        services,
        jwtSecret,
        connections: kas.connections,
        externalUrl: config.externalUrl,
        k8sProxyUrl,
        logger,
        maxRequestBodyBytes: config.maxRequestBodyBytes,
        maxRequestBodySetting: MAX_REQUEST_BODY_SETTING,
        maxPushBytes: config.maxPushBytes,
        maxPushSetting: MAX_PUSH_SETTING,
      });
      const server = http.createServer(app);
      applyHttp1Limits(server, config.limits.platform);
      const bound = await listen(server, config.listen.platform.port, config.listen.platform.host);
      closers.push(() => closeHttp(server));
      addresses.platform = `http://${hostPort(bound.host, bound.port)}`;
    }

    logger.info(
      { ...addresses, dataDir: config.dataDir, database: store?.dialect ?? "none", platform: config.platformUrl ?? "in-process" },
      "kas ready",
    );
    // Machine-readable line for scripts and tests that start kas on port 0.
    process.stdout.write(`KAS_LISTENING ${JSON.stringify(addresses)}\n`);
    return { addresses, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The embedded platform's store and services; the admin user and its token on first start. */
async function startPlatformServices(
  config: KasConfig,
  logger: Logger,
  metrics: KasServerOptions["metrics"],
  jwtSecret: Uint8Array,
): Promise<{ store: Store; services: PlatformServices }> {
  // Like the API secret: created on first start unless the operator names a file (replicas share one).
  const keyFile = config.encryptionKeyFile ?? join(config.dataDir, ".kasbridge_encryption_key");
  const encryptionKey = config.encryptionKeyFile ? await loadSecretFile(keyFile) : (await ensureSecretFile(keyFile)).secret;
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolMax: config.databasePoolSize, logger });
  try {
    const services = createPlatformServices({
      encryptionKey,
      workspaceToolImages: {
        editorInjector: config.workspaceEditorInjectorImage ?? DEFAULT_WORKSPACE_TOOL_IMAGES.editorInjector,
        projectCloner: config.workspaceProjectClonerImage ?? DEFAULT_WORKSPACE_TOOL_IMAGES.projectCloner,
      },
      store,
      logger: logger.child({ component: "platform" }),
      repositoriesDir: join(config.dataDir, "repositories"),
      ciJobTokenTtlMs: config.ciJobTokenTtlSeconds * 1000,
      auditRetentionMs: config.auditRetentionDays * 24 * 60 * 60 * 1000,
      // Browser sessions on workspaces survive restarts and work on every replica (a key derived from it).
      workspaceTokenSecret: jwtSecret,
      // The platform's metrics (vulnerabilities) are served with KAS's on its observability port.
      metrics,
    });
    const admin = await bootstrapAdmin(store, { dataDir: config.dataDir, adminToken: config.adminToken, services, logger });
    if (admin.created) {
      // Printed once, on first start; the token itself is never logged.
      const where = admin.tokenFile ? `written to ${admin.tokenFile}` : "taken from KAS_ADMIN_TOKEN";
      logger.info({ tokenFile: admin.tokenFile }, `created admin user root; its personal access token was ${where}`);
      if (admin.tokenFile) process.stdout.write(`\nAdmin personal access token for user root: ${admin.tokenFile}\n\n`);
    }
    return { store, services };
  } catch (error) {
    await store.close();
    throw error;
  }
}

/**
 * The proxy URL for generated KUBECONFIGs when no external URL is configured: the listening URL,
 * with a wildcard host (0.0.0.0, ::) replaced by the platform's external host or this machine's name.
 */
export function proxyUrlForClients(listenUrl: string, externalUrl: string | undefined): string {
  const u = new URL(listenUrl);
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]") u.hostname = externalUrl ? new URL(externalUrl).hostname : hostname();
  return u.href.replace(/\/$/, "");
}

/** A host to connect to for a listener bound to `host` (a wildcard address means this machine). */
function connectableHost(host: string): string {
  if (host === "0.0.0.0") return "127.0.0.1";
  if (host === "::") return "::1";
  return host;
}

function fail(message: string): never {
  throw new Error(message);
}

function closeHttp(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** The PEM certificate chain and key of a TLS setting, if there is one. */
function readTls(files: TlsFiles | undefined): { cert: Buffer; key: Buffer } | undefined {
  return files && { cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) };
}
