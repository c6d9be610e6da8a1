import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { hostname } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import express from "express";
import type { Logger } from "pino";
import {
  agentConfigurationModule,
  applyHttp1Limits,
  bootstrapAdmin,
  createGitHttpRouter,
  createHttpPlatformClient,
  createInProcessPlatformClient,
  createInternalApi,
  createKasServer,
  createKubernetesApiProxy,
  createObservabilityServer,
  createPlatformApi,
  createPlatformServices,
  ensureSecretFile,
  hostPort,
  loadSecretFile,
  openStore,
  type KasServerOptions,
  type PlatformClient,
  type PlatformServices,
  type Store,
} from "@kasbridge/sdk";
import { MAX_PUSH_SETTING, MAX_REQUEST_BODY_SETTING, type KasConfig, type TlsFiles } from "./config.js";

export interface RunningKas {
  addresses: Record<string, string>;
  close(): Promise<void>;
}

/** Starts the embedded platform (store, REST, internal API), KAS and the observability server. */
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
    const addresses: Record<string, string> = {};

    let services: PlatformServices | undefined;
    let store: Store | undefined;
    if (config.platformEnabled) {
      store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
      const openedStore = store;
      closers.push(() => openedStore.close());
      services = createPlatformServices({
        store,
        logger: logger.child({ component: "platform" }),
        repositoriesDir: join(config.dataDir, "repositories"),
        ciJobTokenTtlMs: config.ciJobTokenTtlSeconds * 1000,
      });
      const admin = await bootstrapAdmin(store, { dataDir: config.dataDir, adminToken: config.adminToken, services, logger });
      if (admin.created) {
        // Printed once, on first start; the token itself is never logged.
        const where = admin.tokenFile ? `written to ${admin.tokenFile}` : "taken from KAS_ADMIN_TOKEN";
        logger.info({ tokenFile: admin.tokenFile }, `created admin user root; its personal access token was ${where}`);
        if (admin.tokenFile) process.stdout.write(`\nAdmin personal access token for user root: ${admin.tokenFile}\n\n`);
      }
    }

    const platform: PlatformClient = config.platformUrl
      ? createHttpPlatformClient({ baseUrl: config.platformUrl, jwtSecret, logger: logger.child({ component: "platform-client" }) })
      : services
        ? createInProcessPlatformClient(services)
        : fail("KAS_PLATFORM_URL is required when the embedded platform is disabled");

    const kas = await createKasServer({
      platform,
      logger,
      metrics: options.metrics,
      maxMessageBytes: config.maxMessageBytes,
      agentApi: {
        host: config.listen.agent.host,
        port: config.listen.agent.port,
        tls: readTls(config.agentTls),
        ...config.limits.agent,
      },
      internalApi: { host: config.listen.internal.host, port: config.listen.internal.port, jwtSecret, ...config.limits.internal },
      privateApi: {
        ...config.limits.private,
        host: config.listen.private.host,
        port: config.listen.private.port,
        jwtSecret: privateJwtSecret,
        tls: readTls(config.privateTls),
      },
      modules: [agentConfigurationModule({ platform, gitlabExternalUrl: config.externalUrl })],
    });
    closers.push(() => kas.close());
    addresses.agent = kas.agentApi.url();
    addresses.internal = `grpc://${hostPort(kas.internalApiAddress.host, kas.internalApiAddress.port)}`;
    if (kas.privateApiAddress) {
      addresses.private = `${config.privateTls ? "grpcs" : "grpc"}://${hostPort(kas.privateApiAddress.host, kas.privateApiAddress.port)}`;
    }

    // Kubernetes API proxy (8154): kubectl -> KAS -> agent tunnel -> cluster. Closed before KAS.
    // kubectl sends tokens only over TLS, so the proxy serves TLS (HTTP/2 + HTTP/1.1 by ALPN) with
    // its own certificate, or the agent API's when it has none.
    const k8sProxy = await createKubernetesApiProxy({
      tls: readTls(config.k8sProxyTls ?? config.agentTls),
      registry: kas.registry,
      platform,
      logger: logger.child({ component: "k8s-proxy" }),
      host: config.listen.k8sProxy.host,
      port: config.listen.k8sProxy.port,
      urlPathPrefix: config.k8sProxyUrlPathPrefix,
      metrics: kas.metrics,
      reauthorizeIntervalMs: config.k8sProxyReauthorizeIntervalSeconds * 1000,
      ...config.limits.k8sProxy,
    });
    closers.push(() => k8sProxy.close(2_000));
    addresses.k8sProxy = k8sProxy.url;
    const k8sProxyUrl = config.k8sProxyExternalUrl ?? proxyUrlForClients(k8sProxy.url, config.externalUrl);
    if (k8sProxyUrl.startsWith("http:")) {
      logger.warn({ url: k8sProxyUrl }, "the Kubernetes API proxy has no TLS: kubectl does not send tokens over plain HTTP (set KAS_K8S_PROXY_TLS_CERT_FILE/KEY_FILE)");
    }

    if (services) {
      const app = express();
      app.disable("x-powered-by");
      app.set("trust proxy", false);
      const bodyLimit = { bodyLimitBytes: config.maxRequestBodyBytes, bodyLimitSetting: MAX_REQUEST_BODY_SETTING };
      app.use(createInternalApi({ services, jwtSecret, logger: logger.child({ component: "internal-api" }), ...bodyLimit }));
      app.use(
        createPlatformApi({
          services,
          connections: kas.tracker,
          externalUrl: config.externalUrl,
          k8sProxyUrl,
          logger: logger.child({ component: "rest-api" }),
          ...bodyLimit,
        }),
      );
      app.use(
        createGitHttpRouter({
          services,
          logger: logger.child({ component: "git-http" }),
          maxBodyBytes: config.maxPushBytes,
          maxBodySetting: MAX_PUSH_SETTING,
        }),
      );
      app.use((req, res) => {
        // A body sent to no route is not read: close rather than drain it.
        if (req.get("content-length") !== undefined || req.get("transfer-encoding") !== undefined) res.set("Connection", "close");
        res.status(404).json({ message: "404 Not Found" });
      });
      const server = http.createServer(app);
      applyHttp1Limits(server, config.limits.platform);
      await listen(server, config.listen.platform.host, config.listen.platform.port);
      closers.push(() => closeHttp(server));
      const bound = server.address() as AddressInfo;
      addresses.platform = `http://${hostPort(bound.address, bound.port)}`;
    }

    const observability = await createObservabilityServer({
      host: config.listen.observability.host,
      port: config.listen.observability.port,
      metrics: kas.metrics,
      ready: () => true,
      ...config.limits.observability,
    });
    closers.push(() => observability.close());
    addresses.observability = `http://${hostPort(observability.address.host, observability.address.port)}`;

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

/**
 * The proxy URL for generated KUBECONFIGs when no external URL is configured: the listening URL,
 * with a wildcard host (0.0.0.0, ::) replaced by the platform's external host or this machine's name.
 */
export function proxyUrlForClients(listenUrl: string, externalUrl: string | undefined): string {
  const u = new URL(listenUrl);
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]") u.hostname = externalUrl ? new URL(externalUrl).hostname : hostname();
  return u.href.replace(/\/$/, "");
}

function fail(message: string): never {
  throw new Error(message);
}

function listen(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
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
