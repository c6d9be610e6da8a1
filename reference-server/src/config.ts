import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { DEFAULT_MAX_MESSAGE_BYTES, GATEWAY_LIMITS } from "@kasbridge/sdk/kas";
import { K8S_PROXY_LIMITS } from "@kasbridge/sdk/modules/kubernetes_api/server";
import { OBSERVABILITY_LIMITS } from "@kasbridge/sdk/modules/observability/server";
import { WORKSPACES_PROXY_LIMITS } from "@kasbridge/sdk/modules/workspaces_proxy/server";
import { AGENT_API_LIMITS, type ResolvedListenerLimits } from "@kasbridge/sdk/transport";
import { parseListenAddress } from "@kasbridge/sdk/util";

/** A listen address. */
export interface HostPort {
  host: string;
  port: number;
}

/** The reference KAS's configuration, after defaults, file and environment are merged. */
export interface KasConfig {
  listen: {
    platform: HostPort;
    agent: HostPort;
    observability: HostPort;
    internal: HostPort;
    k8sProxy: HostPort;
    private: HostPort;
    /** The workspace proxy (kasbridge): `<port>-<workspace>.<dns_zone>` hosts resolve here. */
    workspacesProxy: HostPort;
  };
  /** Connection limits and timeouts of each listener (in ms here; seconds in the file and the environment). */
  limits: Record<ListenerName, ResolvedListenerLimits>;
  dataDir: string;
  /** postgres://... for PostgreSQL; unset: SQLite in the data directory. */
  databaseUrl?: string;
  /** Most PostgreSQL connections this replica opens (its pool). Default 10. */
  databasePoolSize: number;
  /**
   * Redis shared by the KAS replicas (one setting for everything kept there: the tunnel and agent
   * registries, the connection rate limit, the events between replicas). Unset: one KAS.
   */
  redis?: RedisConfig;
  /**
   * This replica's private API URL as the other replicas reach it (GitLab's OWN_PRIVATE_API_URL).
   * Default: listen.private, a wildcard address replaced by this machine's host name.
   */
  ownPrivateApiUrl?: string;
  /** The platform's public URL (GitLab's external_url), used in `web_url` fields. Default: from the request. */
  externalUrl?: string;
  /** Reach the platform over GitLab's internal HTTP API at this URL instead of in-process. */
  platformUrl?: string;
  /** Serve the embedded platform (REST + internal API) on the platform port. */
  platformEnabled: boolean;
  /** Base64 secret file shared with the platform (JWTs both ways); created in the data dir if unset. */
  apiSecretFile?: string;
  /** Base64 secret shared by the KAS replicas for the private API (8155); created in the data dir if unset. */
  privateApiSecretFile?: string;
  /** Base64 key (≥ 32 bytes) the embedded platform encrypts stored secrets with (workspace variables); created in the data dir if unset. */
  encryptionKeyFile?: string;
  /** Images of the workspace editor injector and project cloner (air-gapped clusters mirror them). Default GitLab's. */
  workspaceEditorInjectorImage?: string;
  workspaceProjectClonerImage?: string;
  /** Admin personal access token to create on first start. Never logged. */
  adminToken?: string;
  agentTls?: TlsFiles;
  /** TLS of the Kubernetes API proxy (GitLab: kubernetes_api.listen.certificate_file/key_file). Default: agentTls. */
  k8sProxyTls?: TlsFiles;
  /** TLS of the workspace proxy: a wildcard certificate for the agents' `*.<dns_zone>`. Unset: plain HTTP (behind a TLS-terminating load balancer). */
  workspacesProxyTls?: TlsFiles;
  /** Serve the workspace proxy (docs/workspaces.md "Reaching a workspace"). Default true. */
  workspacesProxyEnabled: boolean;
  /**
   * The platform URL browsers log in at for workspaces (`<url>/-/kasbridge/workspaces/login`).
   * Default: external_url, else platform_url, else the embedded platform's listen address.
   */
  workspacesProxyLoginUrl?: string;
  /** TLS for the private (kas-to-kas) API; unset: cleartext h2c. */
  privateTls?: TlsFiles;
  /** CA bundle the replicas trust for each other's grpcs:// private API. Default: the system's. */
  privateTlsCaFile?: string;
  /**
   * The proxy's URL as clients reach it: the `server` of the KUBECONFIG generated for CI jobs
   * (GitLab's gitlab_kas.external_k8s_proxy_url). Default: derived from listen.k8s_proxy.
   */
  k8sProxyExternalUrl?: string;
  /** Path under which the proxy serves the Kubernetes API, stripped before forwarding (GitLab: kubernetes_api.url_path_prefix). Default "/". */
  k8sProxyUrlPathPrefix: string;
  /**
   * How often the credential of each running proxy request (watch, logs -f, exec, port-forward)
   * is authorized again, as a backstop to the platform's revocation feed; 0 turns it off. Default 60.
   */
  k8sProxyReauthorizeIntervalSeconds: number;
  /**
   * How often KAS sends usage counters to the platform (GitLab's observability.usage_reporting_period);
   * 0 sends none. Default 60.
   */
  usageReportingPeriodSeconds: number;
  /**
   * OpenTelemetry spans exported over OTLP/HTTP (GitLab's observability.tracing). Unset (the
   * default): no tracing.
   */
  tracing?: TracingConfig;
  /** How long the embedded platform keeps audit trail entries, in days. Default 90. */
  auditRetentionDays: number;
  /** Lifetime of a CI job token of the embedded platform (it also stops working when its job finishes). Default 3600. */
  ciJobTokenTtlSeconds: number;
  logLevel: string;
  /**
   * Calls (tunnel streams, registrations, configuration streams) one agent token may open per
   * minute, across the replicas with Redis (GitLab's agent.listen.connections_per_token_per_minute);
   * 0 turns the limit off. Default 40 000.
   */
  connectionsPerTokenPerMinute: number;
  maxMessageBytes: number;
  /** Largest request body of the platform's REST and internal APIs (after gzip decoding). */
  maxRequestBodyBytes: number;
  /** Largest body of a git request on the platform port, a push's pack above all (after gzip decoding). */
  maxPushBytes: number;
}

/** GitLab's observability.tracing: where spans go, with which token and CA. */
export interface TracingConfig {
  /** OTLP/HTTP traces URL (protobuf bodies), http:// or https://. */
  otlpEndpoint: string;
  /** File holding the token sent as `Private-Token`. Never logged. */
  otlpTokenSecretFile?: string;
  /** CA certificate (PEM) of an https endpoint. */
  otlpCaCertificateFile?: string;
}

/** How the replicas reach Redis. */
export interface RedisConfig {
  /** redis://[user@]host:port[/db] or rediss:// (TLS). */
  url: string;
  /** Prefix of every key (GitLab's redis.key_prefix). Default "gitlab-kas". */
  keyPrefix: string;
  /** File holding the Redis password (trailing newline ignored); replaces one in the URL. */
  passwordFile?: string;
  /** TLS: a CA bundle to trust, a client certificate and key (both or neither). */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
}
export type ListenerName = keyof KasConfig["listen"];

/** A PEM certificate chain and its key. */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

const defaults: KasConfig = {
  listen: {
    platform: { host: "127.0.0.1", port: 8080 },
    agent: { host: "127.0.0.1", port: 8150 },
    observability: { host: "127.0.0.1", port: 8151 },
    internal: { host: "127.0.0.1", port: 8153 },
    k8sProxy: { host: "127.0.0.1", port: 8154 },
    private: { host: "127.0.0.1", port: 8155 },
    workspacesProxy: { host: "127.0.0.1", port: 8156 },
  },
  limits: {
    agent: { ...AGENT_API_LIMITS },
    k8sProxy: { ...K8S_PROXY_LIMITS },
    internal: { ...GATEWAY_LIMITS },
    private: { ...GATEWAY_LIMITS },
    // The platform's port and the observability port serve HTTP/1.1 only: no stream limit.
    platform: { maxConnections: 1_000, maxConcurrentStreams: 0, headersTimeoutMs: 20_000, idleTimeoutMs: 5_000 },
    observability: { ...OBSERVABILITY_LIMITS },
    // HTTP/1.1 only (WebSockets are upgrades): no stream limit.
    workspacesProxy: { ...WORKSPACES_PROXY_LIMITS, maxConcurrentStreams: 0 },
  },
  dataDir: "./data",
  databasePoolSize: 10,
  platformEnabled: true,
  workspacesProxyEnabled: true,
  k8sProxyUrlPathPrefix: "/",
  k8sProxyReauthorizeIntervalSeconds: 60,
  usageReportingPeriodSeconds: 60,
  auditRetentionDays: 90,
  ciJobTokenTtlSeconds: 3600,
  logLevel: "info",
  connectionsPerTokenPerMinute: 40_000,
  maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
  maxRequestBodyBytes: 1024 * 1024,
  maxPushBytes: 100 * 1024 * 1024,
};

/** How refusals name the body limits, so an operator knows what to raise. */
export const MAX_REQUEST_BODY_SETTING = "max_request_body_bytes (KAS_MAX_REQUEST_BODY_BYTES)";
export const MAX_PUSH_SETTING = "max_push_bytes (KAS_MAX_PUSH_BYTES)";

/** YAML keys (snake_case) -> where they go. Every other key is an error. */
const listenKeys = { platform: "platform", agent: "agent", observability: "observability", internal: "internal", k8s_proxy: "k8sProxy", private: "private", workspaces_proxy: "workspacesProxy" } as const;
const envListen: Record<string, keyof KasConfig["listen"]> = {
  KAS_PLATFORM_ADDR: "platform",
  KAS_AGENT_ADDR: "agent",
  KAS_OBSERVABILITY_ADDR: "observability",
  KAS_INTERNAL_ADDR: "internal",
  KAS_K8S_PROXY_ADDR: "k8sProxy",
  KAS_PRIVATE_ADDR: "private",
  KAS_WORKSPACES_PROXY_ADDR: "workspacesProxy",
};
/** Listeners without HTTP/2, where max_concurrent_streams means nothing. */
const http1Only: ReadonlySet<ListenerName> = new Set(["platform", "observability", "workspacesProxy"]);
/** The limits' YAML keys and environment suffixes (KAS_<LISTENER>_<SUFFIX>). */
const limitKeys = {
  max_connections: { field: "maxConnections", env: "MAX_CONNECTIONS", seconds: false },
  max_concurrent_streams: { field: "maxConcurrentStreams", env: "MAX_CONCURRENT_STREAMS", seconds: false },
  headers_timeout_seconds: { field: "headersTimeoutMs", env: "HEADERS_TIMEOUT_SECONDS", seconds: true },
  idle_timeout_seconds: { field: "idleTimeoutMs", env: "IDLE_TIMEOUT_SECONDS", seconds: true },
} as const;
const envListenerPrefix: Record<ListenerName, string> = {
  platform: "KAS_PLATFORM",
  agent: "KAS_AGENT",
  observability: "KAS_OBSERVABILITY",
  internal: "KAS_INTERNAL",
  k8sProxy: "KAS_K8S_PROXY",
  private: "KAS_PRIVATE",
  workspacesProxy: "KAS_WORKSPACES_PROXY",
};

/** Sets one limit; `key` names it in errors. idle_timeout_seconds may be 0 (off), the others must be positive. */
function setLimit(config: KasConfig, listener: ListenerName, name: keyof typeof limitKeys, value: unknown, key: string): void {
  const spec = limitKeys[name];
  if (name === "max_concurrent_streams" && http1Only.has(listener)) throw new ConfigError(`${key}: the ${listener} listener has no HTTP/2 streams`);
  const n = name === "idle_timeout_seconds" ? nonNegativeInt(value, key) : positiveInt(value, key);
  config.limits[listener][spec.field] = spec.seconds ? n * 1000 : n;
}

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Loads defaults, then the YAML file (if any), then KAS_* environment variables. */
export function loadConfig(options: { configFile?: string; env: NodeJS.ProcessEnv }): KasConfig {
  const config: KasConfig = structuredClone(defaults);
  if (options.configFile) applyFile(config, options.configFile);
  applyEnv(config, options.env);
  requireBothTlsFiles(config.agentTls, "agent TLS", "agent_tls", "KAS_AGENT_TLS");
  requireBothTlsFiles(config.k8sProxyTls, "Kubernetes API proxy TLS", "k8s_proxy_tls", "KAS_K8S_PROXY_TLS");
  requireBothTlsFiles(config.workspacesProxyTls, "workspace proxy TLS", "workspaces_proxy_tls", "KAS_WORKSPACES_PROXY_TLS");
  requireBothTlsFiles(config.privateTls, "private API TLS", "private_tls", "KAS_PRIVATE_TLS");
  if (config.redis?.tls && Boolean(config.redis.tls.certFile) !== Boolean(config.redis.tls.keyFile)) {
    throw new ConfigError("Redis TLS client authentication needs both redis_tls.cert_file and key_file (KAS_REDIS_TLS_CERT_FILE/KEY_FILE)");
  }
  if (config.redis && !config.redis.url) throw new ConfigError("redis_key_prefix, redis_password_file and redis_tls need redis_url (KAS_REDIS_URL)");
  if (config.tracing && !config.tracing.otlpEndpoint) {
    throw new ConfigError("observability.tracing.otlp_token_secret_file and otlp_ca_certificate_file need otlp_endpoint (KAS_OTLP_ENDPOINT)");
  }
  config.dataDir = resolve(config.dataDir);
  return config;
}

/** The Redis settings, created (URL unset, default prefix) by the first Redis key. */
function redisConfig(config: KasConfig): RedisConfig {
  return (config.redis ??= { url: "", keyPrefix: "gitlab-kas" });
}

/** `{ ca_file, cert_file, key_file }`, each optional, under `key`. */
function redisTls(value: unknown, key: string): NonNullable<RedisConfig["tls"]> {
  const tls = object(value, key);
  const names = { ca_file: "caFile", cert_file: "certFile", key_file: "keyFile" } as const;
  const out: NonNullable<RedisConfig["tls"]> = {};
  for (const [k, v] of Object.entries(tls)) {
    if (!(k in names)) throw new ConfigError(`unknown key ${key}.${k} (expected ca_file, cert_file, key_file)`);
    out[names[k as keyof typeof names]] = string(v, `${key}.${k}`);
  }
  return out;
}

function applyFile(config: KasConfig, file: string): void {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"));
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as Error).message}`);
  }
  if (doc === null || doc === undefined) return;
  const root = object(doc, "(root)");
  for (const [key, value] of Object.entries(root)) {
    switch (key) {
      case "listen": {
        for (const [name, addr] of Object.entries(object(value, "listen"))) {
          if (!(name in listenKeys)) throw new ConfigError(`unknown key listen.${name} (expected one of ${Object.keys(listenKeys).join(", ")})`);
          config.listen[listenKeys[name as keyof typeof listenKeys]] = parseHostPort(string(addr, `listen.${name}`), `listen.${name}`);
        }
        break;
      }
      case "limits": {
        for (const [name, limits] of Object.entries(object(value, "limits"))) {
          if (!(name in listenKeys)) throw new ConfigError(`unknown key limits.${name} (expected one of ${Object.keys(listenKeys).join(", ")})`);
          const listener = listenKeys[name as keyof typeof listenKeys];
          for (const [limit, v] of Object.entries(object(limits, `limits.${name}`))) {
            if (!(limit in limitKeys)) throw new ConfigError(`unknown key limits.${name}.${limit} (expected one of ${Object.keys(limitKeys).join(", ")})`);
            setLimit(config, listener, limit as keyof typeof limitKeys, v, `limits.${name}.${limit}`);
          }
        }
        break;
      }
      case "data_dir":
        config.dataDir = string(value, key);
        break;
      case "database_url":
        config.databaseUrl = databaseUrl(string(value, key), key);
        break;
      case "database_pool_size":
        config.databasePoolSize = positiveInt(value, key);
        break;
      case "redis_url":
        redisConfig(config).url = redisUrl(string(value, key), key);
        break;
      case "redis_key_prefix":
        redisConfig(config).keyPrefix = string(value, key);
        break;
      case "redis_password_file":
        redisConfig(config).passwordFile = string(value, key);
        break;
      case "redis_tls":
        redisConfig(config).tls = redisTls(value, key);
        break;
      case "own_private_api_url":
        config.ownPrivateApiUrl = privateApiUrl(string(value, key), key);
        break;
      case "external_url":
        config.externalUrl = url(string(value, key), key);
        break;
      case "platform_url":
        config.platformUrl = url(string(value, key), key);
        break;
      case "platform_enabled":
        config.platformEnabled = boolean(value, key);
        break;
      case "api_secret_file":
        config.apiSecretFile = string(value, key);
        break;
      case "private_api_secret_file":
        config.privateApiSecretFile = string(value, key);
        break;
      case "encryption_key_file":
        config.encryptionKeyFile = string(value, key);
        break;
      case "workspace_editor_injector_image":
        config.workspaceEditorInjectorImage = string(value, key);
        break;
      case "workspace_project_cloner_image":
        config.workspaceProjectClonerImage = string(value, key);
        break;
      case "log_level":
        config.logLevel = logLevel(string(value, key), key);
        break;
      case "connections_per_token_per_minute":
        config.connectionsPerTokenPerMinute = nonNegativeInt(value, key);
        break;
      case "max_message_bytes":
        config.maxMessageBytes = positiveInt(value, key);
        break;
      case "max_request_body_bytes":
        config.maxRequestBodyBytes = positiveInt(value, key);
        break;
      case "max_push_bytes":
        config.maxPushBytes = positiveInt(value, key);
        break;
      case "agent_tls":
        config.agentTls = tlsFiles(value, key);
        break;
      case "k8s_proxy_tls":
        config.k8sProxyTls = tlsFiles(value, key);
        break;
      case "workspaces_proxy_tls":
        config.workspacesProxyTls = tlsFiles(value, key);
        break;
      case "workspaces_proxy_enabled":
        config.workspacesProxyEnabled = boolean(value, key);
        break;
      case "workspaces_proxy_login_url":
        config.workspacesProxyLoginUrl = url(string(value, key), key);
        break;
      case "private_tls": {
        const { ca_file: caFile, ...pair } = object(value, key);
        config.privateTls = tlsFiles(pair, key);
        if (caFile !== undefined) config.privateTlsCaFile = string(caFile, `${key}.ca_file`);
        break;
      }
      case "k8s_proxy_external_url":
        config.k8sProxyExternalUrl = url(string(value, key), key);
        break;
      case "k8s_proxy_url_path_prefix":
        config.k8sProxyUrlPathPrefix = pathPrefix(string(value, key), key);
        break;
      case "k8s_proxy_reauthorize_interval_seconds":
        config.k8sProxyReauthorizeIntervalSeconds = nonNegativeInt(value, key);
        break;
      case "usage_reporting_period_seconds":
        config.usageReportingPeriodSeconds = nonNegativeInt(value, key);
        break;
      case "audit_retention_days":
        config.auditRetentionDays = positiveInt(value, key);
        break;
      case "observability":
        for (const [name, section] of Object.entries(object(value, key))) {
          if (name !== "tracing") throw new ConfigError(`unknown key observability.${name} (expected tracing)`);
          for (const [k, v] of Object.entries(object(section, "observability.tracing"))) applyTracing(config, k, v, `observability.tracing.${k}`);
        }
        break;
      case "ci_job_token_ttl_seconds":
        config.ciJobTokenTtlSeconds = positiveInt(value, key);
        break;
      default:
        throw new ConfigError(`unknown key ${key} in ${file}`);
    }
  }
}

function applyEnv(config: KasConfig, env: NodeJS.ProcessEnv): void {
  for (const [name, slot] of Object.entries(envListen)) {
    const value = env[name];
    if (value) config.listen[slot] = parseHostPort(value, name);
  }
  for (const [listener, prefix] of Object.entries(envListenerPrefix) as Array<[ListenerName, string]>) {
    for (const [limit, spec] of Object.entries(limitKeys) as Array<[keyof typeof limitKeys, (typeof limitKeys)[keyof typeof limitKeys]]>) {
      const name = `${prefix}_${spec.env}`;
      if (env[name]) setLimit(config, listener, limit, env[name], name);
    }
  }
  if (env.KAS_DATA_DIR) config.dataDir = env.KAS_DATA_DIR;
  if (env.KAS_DATABASE_URL) config.databaseUrl = databaseUrl(env.KAS_DATABASE_URL, "KAS_DATABASE_URL");
  if (env.KAS_DATABASE_POOL_SIZE) config.databasePoolSize = positiveInt(env.KAS_DATABASE_POOL_SIZE, "KAS_DATABASE_POOL_SIZE");
  if (env.KAS_REDIS_URL) redisConfig(config).url = redisUrl(env.KAS_REDIS_URL, "KAS_REDIS_URL");
  if (env.KAS_REDIS_KEY_PREFIX) redisConfig(config).keyPrefix = env.KAS_REDIS_KEY_PREFIX;
  if (env.KAS_REDIS_PASSWORD_FILE) redisConfig(config).passwordFile = env.KAS_REDIS_PASSWORD_FILE;
  for (const [name, slot] of [["KAS_REDIS_TLS_CA_FILE", "caFile"], ["KAS_REDIS_TLS_CERT_FILE", "certFile"], ["KAS_REDIS_TLS_KEY_FILE", "keyFile"]] as const) {
    if (env[name]) (redisConfig(config).tls ??= {})[slot] = env[name];
  }
  if (env.KAS_OWN_PRIVATE_API_URL) config.ownPrivateApiUrl = privateApiUrl(env.KAS_OWN_PRIVATE_API_URL, "KAS_OWN_PRIVATE_API_URL");
  if (env.KAS_PRIVATE_TLS_CA_FILE) config.privateTlsCaFile = env.KAS_PRIVATE_TLS_CA_FILE;
  if (env.KAS_EXTERNAL_URL) config.externalUrl = url(env.KAS_EXTERNAL_URL, "KAS_EXTERNAL_URL");
  if (env.KAS_PLATFORM_URL) config.platformUrl = url(env.KAS_PLATFORM_URL, "KAS_PLATFORM_URL");
  if (env.KAS_PLATFORM_ENABLED) config.platformEnabled = boolean(env.KAS_PLATFORM_ENABLED, "KAS_PLATFORM_ENABLED");
  if (env.KAS_API_SECRET_FILE) config.apiSecretFile = env.KAS_API_SECRET_FILE;
  if (env.KAS_PRIVATE_API_SECRET_FILE) config.privateApiSecretFile = env.KAS_PRIVATE_API_SECRET_FILE;
  if (env.KAS_ENCRYPTION_KEY_FILE) config.encryptionKeyFile = env.KAS_ENCRYPTION_KEY_FILE;
  if (env.KAS_WORKSPACE_EDITOR_INJECTOR_IMAGE) config.workspaceEditorInjectorImage = env.KAS_WORKSPACE_EDITOR_INJECTOR_IMAGE;
  if (env.KAS_WORKSPACE_PROJECT_CLONER_IMAGE) config.workspaceProjectClonerImage = env.KAS_WORKSPACE_PROJECT_CLONER_IMAGE;
  if (env.KAS_ADMIN_TOKEN) config.adminToken = env.KAS_ADMIN_TOKEN;
  if (env.KAS_LOG_LEVEL) config.logLevel = logLevel(env.KAS_LOG_LEVEL, "KAS_LOG_LEVEL");
  if (env.KAS_CONNECTIONS_PER_TOKEN_PER_MINUTE) {
    config.connectionsPerTokenPerMinute = nonNegativeInt(env.KAS_CONNECTIONS_PER_TOKEN_PER_MINUTE, "KAS_CONNECTIONS_PER_TOKEN_PER_MINUTE");
  }
  if (env.KAS_MAX_MESSAGE_BYTES) config.maxMessageBytes = positiveInt(env.KAS_MAX_MESSAGE_BYTES, "KAS_MAX_MESSAGE_BYTES");
  if (env.KAS_MAX_REQUEST_BODY_BYTES) config.maxRequestBodyBytes = positiveInt(env.KAS_MAX_REQUEST_BODY_BYTES, "KAS_MAX_REQUEST_BODY_BYTES");
  if (env.KAS_MAX_PUSH_BYTES) config.maxPushBytes = positiveInt(env.KAS_MAX_PUSH_BYTES, "KAS_MAX_PUSH_BYTES");
  config.agentTls = envTlsFiles(env, "KAS_AGENT_TLS") ?? config.agentTls;
  config.k8sProxyTls = envTlsFiles(env, "KAS_K8S_PROXY_TLS") ?? config.k8sProxyTls;
  config.privateTls = envTlsFiles(env, "KAS_PRIVATE_TLS") ?? config.privateTls;
  config.workspacesProxyTls = envTlsFiles(env, "KAS_WORKSPACES_PROXY_TLS") ?? config.workspacesProxyTls;
  if (env.KAS_WORKSPACES_PROXY_ENABLED) config.workspacesProxyEnabled = boolean(env.KAS_WORKSPACES_PROXY_ENABLED, "KAS_WORKSPACES_PROXY_ENABLED");
  if (env.KAS_WORKSPACES_PROXY_LOGIN_URL) config.workspacesProxyLoginUrl = url(env.KAS_WORKSPACES_PROXY_LOGIN_URL, "KAS_WORKSPACES_PROXY_LOGIN_URL");
  if (env.KAS_K8S_PROXY_EXTERNAL_URL) config.k8sProxyExternalUrl = url(env.KAS_K8S_PROXY_EXTERNAL_URL, "KAS_K8S_PROXY_EXTERNAL_URL");
  if (env.KAS_K8S_PROXY_URL_PATH_PREFIX) config.k8sProxyUrlPathPrefix = pathPrefix(env.KAS_K8S_PROXY_URL_PATH_PREFIX, "KAS_K8S_PROXY_URL_PATH_PREFIX");
  if (env.KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS) {
    config.k8sProxyReauthorizeIntervalSeconds = nonNegativeInt(env.KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS, "KAS_K8S_PROXY_REAUTHORIZE_INTERVAL_SECONDS");
  }
  if (env.KAS_USAGE_REPORTING_PERIOD_SECONDS) {
    config.usageReportingPeriodSeconds = nonNegativeInt(env.KAS_USAGE_REPORTING_PERIOD_SECONDS, "KAS_USAGE_REPORTING_PERIOD_SECONDS");
  }
  for (const [name, k] of [["KAS_OTLP_ENDPOINT", "otlp_endpoint"], ["KAS_OTLP_TOKEN_SECRET_FILE", "otlp_token_secret_file"], ["KAS_OTLP_CA_CERTIFICATE_FILE", "otlp_ca_certificate_file"]] as const) {
    if (env[name]) applyTracing(config, k, env[name], name);
  }
  if (env.KAS_AUDIT_RETENTION_DAYS) config.auditRetentionDays = positiveInt(env.KAS_AUDIT_RETENTION_DAYS, "KAS_AUDIT_RETENTION_DAYS");
  if (env.KAS_CI_JOB_TOKEN_TTL_SECONDS) config.ciJobTokenTtlSeconds = positiveInt(env.KAS_CI_JOB_TOKEN_TTL_SECONDS, "KAS_CI_JOB_TOKEN_TTL_SECONDS");
}

/** One key of observability.tracing (GitLab's names). */
function applyTracing(config: KasConfig, key: string, value: unknown, where: string): void {
  const tracing = (config.tracing ??= { otlpEndpoint: "" });
  switch (key) {
    case "otlp_endpoint":
      tracing.otlpEndpoint = otlpEndpoint(string(value, where), where);
      break;
    case "otlp_token_secret_file":
      tracing.otlpTokenSecretFile = string(value, where);
      break;
    case "otlp_ca_certificate_file":
      tracing.otlpCaCertificateFile = string(value, where);
      break;
    default:
      throw new ConfigError(`unknown key ${where} (expected otlp_endpoint, otlp_token_secret_file, otlp_ca_certificate_file)`);
  }
}

/** An OTLP/HTTP URL without credentials (a token goes in otlp_token_secret_file). */
function otlpEndpoint(value: string, key: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new ConfigError(`${key} must be an http(s) URL such as http://localhost:4318/v1/traces`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new ConfigError(`${key} must be an http(s) URL such as http://localhost:4318/v1/traces`);
  if (u.username || u.password) throw new ConfigError(`${key} must not carry credentials (use otlp_token_secret_file)`);
  return value;
}

/** `<prefix>_CERT_FILE` / `<prefix>_KEY_FILE`; either one set means both are meant (checked later). */
function envTlsFiles(env: NodeJS.ProcessEnv, prefix: string): TlsFiles | undefined {
  const certFile = env[`${prefix}_CERT_FILE`];
  const keyFile = env[`${prefix}_KEY_FILE`];
  return certFile || keyFile ? { certFile: certFile ?? "", keyFile: keyFile ?? "" } : undefined;
}

/** A TLS setting given in part (one environment variable of the pair) is an error naming both. */
function requireBothTlsFiles(tls: TlsFiles | undefined, what: string, key: string, envPrefix: string): void {
  if (tls && (!tls.certFile || !tls.keyFile)) {
    throw new ConfigError(
      `${what} needs both a certificate and a key (${key}.cert_file/key_file or ${envPrefix}_CERT_FILE/${envPrefix}_KEY_FILE)`,
    );
  }
}

/** `{ cert_file, key_file }` under `key`. */
function tlsFiles(value: unknown, key: string): TlsFiles {
  const tls = object(value, key);
  for (const k of Object.keys(tls)) if (k !== "cert_file" && k !== "key_file") throw new ConfigError(`unknown key ${key}.${k}`);
  return { certFile: string(tls.cert_file, `${key}.cert_file`), keyFile: string(tls.key_file, `${key}.key_file`) };
}

/** "host:port", "[::1]:port" or ":port" (all interfaces). Port 0 picks a free port. */
export function parseHostPort(value: string, key: string): HostPort {
  const address = parseListenAddress(value);
  if (!address) throw new ConfigError(`${key}: "${value}" is not host:port`);
  return address;
}

function object(value: unknown, key: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new ConfigError(`${key} must be a mapping`);
  return value as Record<string, unknown>;
}

function string(value: unknown, key: string): string {
  if (typeof value !== "string" || value === "") throw new ConfigError(`${key} must be a non-empty string`);
  return value;
}

function boolean(value: unknown, key: string): boolean {
  if (typeof value === "boolean") return value;
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0") return false;
  throw new ConfigError(`${key} must be true or false`);
}

function positiveInt(value: unknown, key: string): number {
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new ConfigError(`${key} must be a positive integer`);
  return n;
}

function nonNegativeInt(value: unknown, key: string): number {
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new ConfigError(`${key} must be a non-negative integer`);
  return n;
}

function url(value: string, key: string): string {
  try {
    const u = new URL(value);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
    return value.replace(/\/+$/, "");
  } catch {
    throw new ConfigError(`${key} must be an http(s) URL`);
  }
}

/** An absolute URL path such as "/" or "/-/k8s-proxy/" (no query, no "." or ".." segments). */
function pathPrefix(value: string, key: string): string {
  if (!value.startsWith("/") || /[?#\s]/.test(value) || value.split("/").some((s) => s === "." || s === "..")) {
    throw new ConfigError(`${key} must be a URL path starting with / (for example /k8s-proxy/)`);
  }
  return value;
}

function databaseUrl(value: string, key: string): string {
  if (!/^postgres(ql)?:\/\//.test(value)) throw new ConfigError(`${key} must be a postgres:// URL (unset for SQLite)`);
  return value;
}

function redisUrl(value: string, key: string): string {
  if (!/^rediss?:\/\/[^/]/.test(value)) throw new ConfigError(`${key} must be a redis:// or rediss:// URL`);
  return value;
}

function privateApiUrl(value: string, key: string): string {
  if (!/^grpcs?:\/\/[^/]+$/.test(value.replace(/\/$/, ""))) throw new ConfigError(`${key} must be grpc://host:port or grpcs://host:port`);
  return value.replace(/\/$/, "");
}

function logLevel(value: string, key: string): string {
  if (!logLevels.includes(value)) throw new ConfigError(`${key} must be one of ${logLevels.join(", ")}`);
  return value;
}
