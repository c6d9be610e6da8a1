import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DEFAULT_MAX_MESSAGE_BYTES } from "@kasbridge/sdk/agent";
import { parseListenAddress } from "@kasbridge/sdk/util";
import { WORKSPACE_CONNECT_MODES, type WorkspaceConnectMode } from "@kasbridge/sdk/modules/workspaces_proxy/agent";

export interface AgentArgs {
  kasAddress: string;
  token: string;
  kubeconfig?: string;
  caCertFile?: string;
  headers: Record<string, string>;
  podName: string;
  podNamespace: string;
  logLevel: string;
  graceMs: number;
  maxMessageBytes: number;
  /** Where /metrics, /liveness and /readiness are served (GitLab's default :8080), and with which certificate. */
  observability: { host: string; port: number; certFile?: string; keyFile?: string };
  /**
   * Spans exported over OTLP/HTTP, as KAS's observability.tracing: --otlp-endpoint (or
   * AGENTK_OTLP_ENDPOINT, or OpenTelemetry's OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), its token file and
   * CA file. Unset: no tracing.
   */
  tracing?: { otlpEndpoint: string; otlpTokenSecretFile?: string; otlpCaCertificateFile?: string };
  /** How long KAS may be unreachable before /readiness fails, in ms. Default 60 000. */
  kasLossTimeoutMs: number;
  /** ServiceAccount of the scanner pods (SERVICE_ACCOUNT_NAME, as GitLab's chart sets it). */
  serviceAccountName: string;
  /** Operational container scanning tuning (only with cluster access). */
  containerScanning: {
    /** --container-scanning-image: the scanner image; undefined: GitLab's. */
    image?: string;
    /** --container-scanning-poll-interval-ms: how often the leader asks the platform for requested scans. */
    pollIntervalMs?: number;
    /** --container-scanning-rescan-delay-ms: wait after a new image before its namespace is scanned. */
    rescanDelayMs?: number;
  };
  /**
   * --workspaces-proxy-mode (AGENTK_WORKSPACES_PROXY_MODE): how workspace requests from KAS reach
   * workspaces: "port-forward" (default, through the API server) or "service" (in the cluster).
   */
  workspacesProxyMode: WorkspaceConnectMode;
}

const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export class UsageError extends Error {
  override readonly name = "UsageError";
}

export const usage = `usage: agentk --kas-address grpc://host:8150 (--token-file FILE | env AGENTK_TOKEN)
  [--kubeconfig FILE] [--ca-cert-file FILE] [--kas-header 'Name: value']... [--log-level info]
  [--shutdown-grace-ms 10000] [--max-message-bytes 16777216]
  [--observability-listen-network tcp] [--observability-listen-address :8080]
  [--observability-cert-file FILE --observability-key-file FILE] [--readiness-kas-loss-timeout-ms 60000]
  [--container-scanning-image IMAGE] [--container-scanning-poll-interval-ms 10000]
  [--container-scanning-rescan-delay-ms 30000] [--workspaces-proxy-mode port-forward|service]
  [--otlp-endpoint http://collector:4318/v1/traces [--otlp-token-secret-file FILE] [--otlp-ca-certificate-file FILE]]
  Schemes: grpc:// (h2c), grpcs:// (TLS), ws:// and wss:// (WebSocket, for HTTP-only proxies).
  Pod identity from POD_NAME / POD_NAMESPACE; scanner pods' ServiceAccount from SERVICE_ACCOUNT_NAME.`;

/** Parses agentk's command line and environment (GitLab agentk's flag names). */
export function parseAgentArgs(argv: string[], env: NodeJS.ProcessEnv): AgentArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      "kas-address": { type: "string" },
      "token-file": { type: "string" },
      kubeconfig: { type: "string" },
      "ca-cert-file": { type: "string" },
      "kas-header": { type: "string", multiple: true },
      "log-level": { type: "string" },
      "shutdown-grace-ms": { type: "string" },
      "max-message-bytes": { type: "string" },
      "observability-listen-network": { type: "string" },
      "observability-listen-address": { type: "string" },
      "observability-cert-file": { type: "string" },
      "observability-key-file": { type: "string" },
      "readiness-kas-loss-timeout-ms": { type: "string" },
      "container-scanning-image": { type: "string" },
      "container-scanning-poll-interval-ms": { type: "string" },
      "container-scanning-rescan-delay-ms": { type: "string" },
      "otlp-endpoint": { type: "string" },
      "otlp-token-secret-file": { type: "string" },
      "otlp-ca-certificate-file": { type: "string" },
      "workspaces-proxy-mode": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) throw new UsageError(usage);
  const kasAddress = values["kas-address"] ?? env.AGENTK_KAS_ADDRESS;
  if (!kasAddress) throw new UsageError(`--kas-address is required\n${usage}`);
  if (!/^(grpcs?|wss?):\/\/[^/]+/.test(kasAddress)) {
    throw new UsageError(`--kas-address must be grpc://, grpcs://, ws:// or wss:// (got "${kasAddress}")`);
  }
  if (values["token-file"] && env.AGENTK_TOKEN) {
    throw new UsageError("use either --token-file or AGENTK_TOKEN, not both");
  }
  let token = env.AGENTK_TOKEN ?? "";
  if (values["token-file"]) {
    try {
      token = readFileSync(values["token-file"], "utf8").trim();
    } catch (error) {
      throw new UsageError(`cannot read --token-file: ${(error as Error).message}`);
    }
  }
  if (!token) throw new UsageError(`an agent token is required (--token-file or AGENTK_TOKEN)\n${usage}`);
  const headers: Record<string, string> = {};
  for (const h of values["kas-header"] ?? []) {
    const i = h.indexOf(":");
    if (i <= 0) throw new UsageError(`--kas-header must be "Name: value" (got "${h}")`);
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  const logLevel = values["log-level"] ?? env.AGENTK_LOG_LEVEL ?? "info";
  if (!logLevels.includes(logLevel)) throw new UsageError(`--log-level must be one of ${logLevels.join(", ")}`);
  const maxMessageBytes = Number(values["max-message-bytes"] ?? DEFAULT_MAX_MESSAGE_BYTES);
  if (!Number.isSafeInteger(maxMessageBytes) || maxMessageBytes <= 0) throw new UsageError("--max-message-bytes must be a positive integer");
  const graceMs = Number(values["shutdown-grace-ms"] ?? 10_000);
  if (!Number.isFinite(graceMs) || graceMs < 0) throw new UsageError("--shutdown-grace-ms must be a non-negative number");
  const network = values["observability-listen-network"] ?? "tcp";
  if (!["tcp", "tcp4", "tcp6"].includes(network)) throw new UsageError(`--observability-listen-network must be tcp, tcp4 or tcp6 (got "${network}")`);
  const observabilityAddress = values["observability-listen-address"] ?? env.AGENTK_OBSERVABILITY_LISTEN_ADDRESS ?? ":8080";
  const listen = parseListenAddress(observabilityAddress);
  if (!listen) throw new UsageError(`--observability-listen-address must be host:port or :port (got "${observabilityAddress}")`);
  // ":port" is every interface: IPv6 ones too unless tcp4 says otherwise.
  if (/^\s*:/.test(observabilityAddress) && network === "tcp6") listen.host = "::";
  const certFile = values["observability-cert-file"];
  const keyFile = values["observability-key-file"];
  if (Boolean(certFile) !== Boolean(keyFile)) throw new UsageError("--observability-cert-file and --observability-key-file go together");
  const kasLossTimeoutMs = Number(values["readiness-kas-loss-timeout-ms"] ?? 60_000);
  if (!Number.isFinite(kasLossTimeoutMs) || kasLossTimeoutMs < 0) throw new UsageError("--readiness-kas-loss-timeout-ms must be a non-negative number");
  const scanningMs = (flag: "container-scanning-poll-interval-ms" | "container-scanning-rescan-delay-ms") => {
    const text = values[flag];
    if (text === undefined) return undefined;
    const ms = Number(text);
    if (!Number.isSafeInteger(ms) || ms <= 0) throw new UsageError(`--${flag} must be a positive integer (milliseconds), got "${text}"`);
    return ms;
  };
  const image = values["container-scanning-image"];
  if (image !== undefined && !/^[^\s]+$/.test(image)) throw new UsageError(`--container-scanning-image must be an image reference, got "${image}"`);
  const otlpEndpoint = values["otlp-endpoint"] ?? env.AGENTK_OTLP_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const otlpTokenSecretFile = values["otlp-token-secret-file"] ?? env.AGENTK_OTLP_TOKEN_SECRET_FILE;
  const otlpCaCertificateFile = values["otlp-ca-certificate-file"] ?? env.AGENTK_OTLP_CA_CERTIFICATE_FILE;
  if (otlpEndpoint !== undefined) {
    let u: URL | undefined;
    try {
      u = new URL(otlpEndpoint);
    } catch {
      // reported below
    }
    if (!u || (u.protocol !== "http:" && u.protocol !== "https:")) {
      throw new UsageError(`--otlp-endpoint must be an http(s) URL such as http://collector:4318/v1/traces (got "${otlpEndpoint}")`);
    }
    if (u.username || u.password) throw new UsageError("--otlp-endpoint must not carry credentials: use --otlp-token-secret-file");
  } else if (otlpTokenSecretFile || otlpCaCertificateFile) {
    throw new UsageError("--otlp-token-secret-file and --otlp-ca-certificate-file need --otlp-endpoint");
  }
  const workspacesProxyMode = values["workspaces-proxy-mode"] ?? env.AGENTK_WORKSPACES_PROXY_MODE ?? "port-forward";
  if (!(WORKSPACE_CONNECT_MODES as readonly string[]).includes(workspacesProxyMode)) {
    throw new UsageError(`--workspaces-proxy-mode must be one of ${WORKSPACE_CONNECT_MODES.join(", ")} (got "${workspacesProxyMode}")`);
  }
  return {
    kasAddress,
    workspacesProxyMode: workspacesProxyMode as WorkspaceConnectMode,
    token,
    tracing: otlpEndpoint === undefined ? undefined : { otlpEndpoint, otlpTokenSecretFile, otlpCaCertificateFile },
    observability: { ...listen, certFile, keyFile },
    kasLossTimeoutMs,
    serviceAccountName: env.SERVICE_ACCOUNT_NAME ?? "",
    containerScanning: {
      image,
      pollIntervalMs: scanningMs("container-scanning-poll-interval-ms"),
      rescanDelayMs: scanningMs("container-scanning-rescan-delay-ms"),
    },
    kubeconfig: values.kubeconfig ?? env.KUBECONFIG,
    caCertFile: values["ca-cert-file"],
    headers,
    podName: env.POD_NAME ?? "",
    podNamespace: env.POD_NAMESPACE ?? "",
    logLevel,
    graceMs,
    maxMessageBytes,
  };
}
