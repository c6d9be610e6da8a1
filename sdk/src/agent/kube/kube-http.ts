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
  private credentials: { options: https.RequestOptions; until: number } | undefined;
  private readonly agent: http.Agent;

  constructor(
    readonly kubeconfig: KubeConfig,
    private readonly credentialTtlMs = 10_000,
  ) {
    const cluster = kubeconfig.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    this.server = new URL(cluster.server);
    this.agent = this.server.protocol === "https:" ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
  }

  /** The API server's URL (no trailing slash). */
  get serverUrl(): string {
    return this.server.href.replace(/\/$/, "");
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  private async options(): Promise<https.RequestOptions> {
    if (this.credentials && this.credentials.until > Date.now()) return this.credentials.options;
    const options: https.RequestOptions = { headers: {} };
    await this.kubeconfig.applyToHTTPSOptions(options);
    this.credentials = { options, until: Date.now() + this.credentialTtlMs };
    return options;
  }

  /** Sends one request to `path` (e.g. "/api/v1/namespaces"); resolves with the response, unread. */
  async raw(method: string, path: string, request: KubeRequest = {}): Promise<http.IncomingMessage> {
    const credentials = await this.options();
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
          ca: credentials.ca,
          cert: credentials.cert,
          key: credentials.key,
          pfx: credentials.pfx,
          passphrase: credentials.passphrase,
          servername: credentials.servername,
          ...(credentials.rejectUnauthorized !== undefined ? { rejectUnauthorized: credentials.rejectUnauthorized } : {}),
          auth: credentials.auth,
          // TLS material is per request: a shared pool only for plain HTTP and one set of files.
          agent: isHttps ? undefined : this.agent,
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
   */
  async watch<T>(path: string, resourceVersion: string, onEvent: (event: WatchEvent<T>) => void, signal: AbortSignal): Promise<void> {
    const res = await this.raw("GET", path, {
      query: { watch: "true", resourceVersion, allowWatchBookmarks: "true", timeoutSeconds: "300" },
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
