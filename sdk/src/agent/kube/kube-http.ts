import http from "node:http";
import https from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";

/** A Kubernetes API error, with the `Status` the API server answered. */
export class KubeApiError extends Error {
  override readonly name = "KubeApiError";
  constructor(
    readonly status: number,
    /** The Status object's reason ("NotFound", "Conflict", "Invalid", ...), if any. */
    readonly reason: string,
    message: string,
    /** The Status object's details (field causes of an Invalid answer), if any. */
    readonly details?: { causes?: Array<{ field?: string; message?: string; reason?: string }> },
  ) {
    super(message);
  }
}

export const isNotFound = (error: unknown): boolean => error instanceof KubeApiError && error.status === 404;
export const isConflict = (error: unknown): boolean => error instanceof KubeApiError && error.status === 409;

export interface KubeRequest {
  query?: Record<string, string | undefined>;
  /** A JSON body (objects are serialized). */
  body?: unknown;
  /** Default application/json (for PATCH: the patch type). */
  contentType?: string;
  signal?: AbortSignal;
}

/** One event of a watch. */
export interface WatchEvent<T = Record<string, unknown>> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

/**
 * A small JSON client of the Kubernetes API with the agent's credentials (a kubeconfig or the
 * in-cluster ServiceAccount), for the agent's GitOps and Flux modules: plain JSON in and out
 * (objects stay exactly as the API server sends them), watches as streams of events.
 * Credentials are re-read at most every `credentialTtlMs` (in-cluster tokens rotate).
 */
export class KubeHttp {
  private readonly server: URL;
  private credentials: { options: https.RequestOptions; agent: http.Agent; until: number } | undefined;

  constructor(
    readonly kubeconfig: KubeConfig,
    private readonly credentialTtlMs = 10_000,
  ) {
    const cluster = kubeconfig.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    this.server = new URL(cluster.server);
  }

  /** The API server's URL (no trailing slash). */
  get serverUrl(): string {
    return this.server.href.replace(/\/$/, "");
  }

  /** Closes the keep-alive connections. */
  close(): void {
    this.credentials?.agent.destroy();
    this.credentials = undefined;
  }

  /**
   * The credentials and a keep-alive pool holding their TLS material: one TLS handshake per
   * connection, not per request (an apply of hundreds of objects). Re-read every credentialTtlMs;
   * a new pool replaces the old one, whose idle connections close (busy ones, watches, finish).
   */
  private async options(): Promise<{ options: https.RequestOptions; agent: http.Agent }> {
    if (this.credentials && this.credentials.until > Date.now()) return this.credentials;
    const options: https.RequestOptions = { headers: {} };
    await this.kubeconfig.applyToHTTPSOptions(options);
    const previous = this.credentials;
    // A kubeconfig with a proxy-url gets its proxy agent from client-node, TLS material included.
    const agent = options.agent
      ? (options.agent as http.Agent)
      : this.server.protocol === "https:"
        ? new https.Agent({
            keepAlive: true,
            ca: options.ca,
            cert: options.cert,
            key: options.key,
            pfx: options.pfx,
            passphrase: options.passphrase,
            servername: options.servername,
            ...(options.rejectUnauthorized !== undefined ? { rejectUnauthorized: options.rejectUnauthorized } : {}),
          })
        : new http.Agent({ keepAlive: true });
    this.credentials = { options, agent, until: Date.now() + this.credentialTtlMs };
    if (previous) {
      previous.agent.maxFreeSockets = 0;
      for (const sockets of Object.values(previous.agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
    }
    return this.credentials;
  }

  /** Sends one request to `path` (e.g. "/api/v1/namespaces"); resolves with the response, unread. */
  async raw(method: string, path: string, request: KubeRequest = {}): Promise<http.IncomingMessage> {
    const { options: credentials, agent } = await this.options();
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(request.query ?? {})) if (v !== undefined) query.set(k, v);
    const qs = query.toString();
    const body = request.body === undefined ? undefined : typeof request.body === "string" ? request.body : JSON.stringify(request.body);
    const headers: http.OutgoingHttpHeaders = { ...(credentials.headers as http.OutgoingHttpHeaders), accept: "application/json" };
    if (body !== undefined) {
      headers["content-type"] = request.contentType ?? "application/json";
      headers["content-length"] = Buffer.byteLength(body);
    }
    const isHttps = this.server.protocol === "https:";
    const basePath = this.server.pathname.replace(/\/$/, "");
    return new Promise((resolve, reject) => {
      const req = (isHttps ? https : http).request(
        {
          auth: credentials.auth,
          agent,
          method,
          protocol: this.server.protocol,
          hostname: this.server.hostname.replace(/^\[|\]$/g, ""),
          port: this.server.port || (isHttps ? 443 : 80),
          path: `${basePath}${path}${qs ? `?${qs}` : ""}`,
          headers,
          signal: request.signal,
        },
        resolve,
      );
      req.once("error", reject);
      req.end(body);
    });
  }

  /** A JSON request; throws KubeApiError for an answer other than 2xx. */
  async json<T = Record<string, unknown>>(method: string, path: string, request: KubeRequest = {}): Promise<T> {
    const res = await this.raw(method, path, request);
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let parsed: unknown;
    try {
      parsed = text === "" ? {} : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return parsed as T;
    const s = (parsed ?? {}) as { reason?: string; message?: string; details?: KubeApiError["details"] };
    throw new KubeApiError(status, s.reason ?? "", s.message ?? `HTTP ${status} from the API server: ${text.slice(0, 200)}`, s.details);
  }

  /**
   * Watches `path` (a collection) from `resourceVersion`; calls `onEvent` per event; resolves when
   * the API server ends the watch, rejects on failure (410 Gone: the version is too old).
   * `query` adds list options, e.g. a `labelSelector`.
   */
  async watch<T>(path: string, resourceVersion: string, onEvent: (event: WatchEvent<T>) => void, signal: AbortSignal, query: Record<string, string> = {}): Promise<void> {
    const res = await this.raw("GET", path, {
      query: { ...query, watch: "true", resourceVersion, allowWatchBookmarks: "true", timeoutSeconds: "300" },
      signal,
    });
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      const s = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as { reason?: string; message?: string };
      throw new KubeApiError(res.statusCode ?? 0, s.reason ?? "", s.message ?? `watch ${path}: HTTP ${res.statusCode}`);
    }
    let buffered = "";
    for await (const chunk of res) {
      buffered += (chunk as Buffer).toString("utf8");
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line === "") continue;
        const event = JSON.parse(line) as WatchEvent<T>;
        if (event.type === "ERROR") {
          const s = event.object as { code?: number; reason?: string; message?: string };
          throw new KubeApiError(s.code ?? 500, s.reason ?? "", s.message ?? "watch error");
        }
        onEvent(event);
      }
    }
  }
}
