import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ManifestProjectStatusSchema } from "../gen/kasbridge/gitops/v1/sync_status_pb.js";
import pino from "pino";
import type { Logger } from "pino";
import { KAS_API_REQUEST_HEADER, signKasApiRequestJwt } from "../auth/jwt.js";
import { ConfigurationFileSchema } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import {
  AGENT_CONFIGURATION_CHANGES_PATH,
  AGENT_CONFIGURATION_PATH,
  AGENT_INFO_PATHS,
  AUTHORIZE_PROXY_USER_PATH,
  JOB_ALLOWED_AGENTS_PATH,
  JOB_TOKEN_HEADER,
  MODULE_REQUEST_PATH_PREFIX,
  TOKEN_REVOCATIONS_PATH,
  GITOPS_STATUS_PATH,
  PROJECT_INFO_PATH,
  REPOSITORY_BLOB_PATH,
  REPOSITORY_COMMIT_PATH,
  REPOSITORY_TREE_PATH,
  VERIFY_PROJECT_ACCESS_PATH,
  USAGE_METRICS_PATH,
  AUDIT_EVENTS_PATH,
  WORKSPACE_ACCESS_PATH,
} from "./internal-api-paths.js";
import { encodePath } from "../http/request-path.js";
import type { KasAuditEvent } from "./audit-events.js";
import {
  PlatformError,
  RepositoryFileTooLargeError,
  parseJobAllowedAgents,
  parseProxyUserAuthorization,
  parseWorkspaceAccess,
  type AuthorizeProxyUserRequest,
  type WorkspaceAccessAnswer,
  type WorkspaceAccessRequest,
  type JobAllowedAgents,
  type ProxyUserAuthorizationAnswer,
  type AgentConfigurationSnapshot,
  type AgentInfo,
  type ModuleRequest,
  type ModuleResponse,
  type MultiMap,
  type PlatformClient,
  type ProjectInfo,
  type TokenRevocation,
  type UsageMetricsPayload,
} from "./platform-client.js";

export interface HttpPlatformClientOptions {
  /** Platform base URL, e.g. "http://127.0.0.1:8080" or "https://gitlab.example.com". */
  baseUrl: string;
  /** Shared secret of the `Gitlab-Kas-Api-Request` JWT (decoded `.gitlab_kas_secret`). */
  jwtSecret: Uint8Array;
  /** Timeout of one request, body included. Default 10 000 ms. */
  requestTimeoutMs?: number;
  /** Delay between two polls of the revocation feed. Default 500 ms. */
  revocationPollIntervalMs?: number;
  /** Longest delay between polls while the feed keeps failing (doubling from the interval). Default 10 000 ms. */
  revocationMaxBackoffMs?: number;
  /** Delay between two polls of the agent configuration change feed. Default 500 ms. */
  configurationPollIntervalMs?: number;
  /** Longest delay between polls while that feed keeps failing (doubling from the interval). Default 10 000 ms. */
  configurationMaxBackoffMs?: number;
  /** Default: global fetch. */
  fetch?: typeof fetch;
  /** Default: silent. */
  logger?: Logger;
  /** Default "kasbridge". */
  userAgent?: string;
}

/** Where a full page of the revocation feed is fetched again at once instead of after the interval. */
const FEED_PAGE_SIZE = 1000;
const KAS_JWT_REFUSED = "KAS JWT authentication invalid";

/**
 * PlatformClient speaking GitLab's internal API over HTTP. Works against our platform
 * (createInternalApi) and, for agent_info, against GitLab itself; the revocation and configuration
 * watches and getAgentConfiguration need our extensions (`token_revocations`,
 * `agent_configuration_changes`, GET `agent_configuration`): against GitLab the watches keep
 * failing with back-off and deliver nothing.
 */
export function createHttpPlatformClient(options: HttpPlatformClientOptions): PlatformClient {
  const base = new URL(options.baseUrl.endsWith("/") ? options.baseUrl : `${options.baseUrl}/`);
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.requestTimeoutMs ?? 10_000;

  const logger = options.logger ?? pino({ level: "silent" });
  const userAgent = options.userAgent ?? "kasbridge";

  /** One GET with JWT (and agent token), the body read within the timeout. */
  async function get(
    path: string,
    query: Record<string, string>,
    agentToken: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; body: unknown }> {
    return send("GET", path, query, agentToken === undefined ? {} : { authorization: `Bearer ${agentToken}` }, undefined, true, signal);
  }

  /** One request (with the KAS JWT when `jwt`), the body read within the timeout. */
  async function send(
    method: "GET" | "POST",
    path: string,
    query: Record<string, string>,
    extraHeaders: Record<string, string>,
    jsonBody: unknown,
    jwt: boolean,
    signal: AbortSignal | undefined,
  ): Promise<{ status: number; body: unknown }> {
    signal?.throwIfAborted();
    const url = new URL(path.replace(/^\//, ""), base);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const headers: Record<string, string> = { accept: "application/json", "user-agent": userAgent, ...extraHeaders };
      if (jwt) headers[KAS_API_REQUEST_HEADER] = await signKasApiRequestJwt(options.jwtSecret);
      let body: string | undefined;
      if (jsonBody !== undefined) {
        headers["content-type"] = "application/json";
        body = JSON.stringify(jsonBody);
      }
      const res = await doFetch(url, { method, headers, body, signal: controller.signal, redirect: "error" });
      const text = await res.text();
      let parsed: unknown;
      try {
        parsed = text === "" ? undefined : JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      return { status: res.status, body: parsed };
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      // Only the path: the URL's query never holds secrets, but the base URL might embed credentials.
      const what = timedOut ? `timed out after ${timeoutMs} ms` : (err as Error).message;
      throw new PlatformError("unavailable", `platform request ${path} failed: ${what}`, { cause: err });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  function errorFor(status: number, body: unknown, what: string): PlatformError {
    const message = typeof (body as { message?: unknown })?.message === "string" ? (body as { message: string }).message : "";
    if (status === 401 && message === KAS_JWT_REFUSED) {
      // KAS's secret does not match the platform's: a deployment problem, not a bad agent token,
      // so it must not be cached or reported to the agent as "unauthenticated".
      return new PlatformError("unavailable", `platform refused KAS's JWT (${what}): check that both use the same secret`);
    }
    if (status === 401) return new PlatformError("unauthenticated", `${what}: unauthenticated`);
    if (status === 403) return new PlatformError("forbidden", `${what}: forbidden`);
    if (status === 404) return new PlatformError("not_found", `${what}: not found`);
    return new PlatformError("unavailable", `${what}: platform answered HTTP ${status}`);
  }

  // ---- feed watches: one shared poller per feed however many watchers and agents ----

  /**
   * Watchers of one feed, served by one poller that runs while there is at least one watcher.
   * The poller's first answer only positions its cursor at "now"; later pages are delivered.
   */
  function feedWatch<T>(feed: {
    path: string;
    what: string;
    pollMs: number;
    maxBackoffMs: number;
    /** `entries`: how many feed entries the page held (a full page is followed at once). */
    parse(body: unknown): { items: T[]; cursor: string; entries: number };
    describe(item: T): Record<string, unknown>;
  }) {
    const watchers = new Set<(item: T) => void>();
    let stopPoller: (() => void) | undefined;

    function deliver(items: T[]): void {
      for (const item of items) {
        for (const watcher of [...watchers]) {
          try {
            watcher(item);
          } catch (err) {
            logger.error({ err, ...feed.describe(item) }, `${feed.what} watcher failed`);
          }
        }
      }
    }

    function startPoller(): () => void {
      const controller = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      let cursor: string | undefined;
      let failures = 0;

      const poll = async () => {
        timer = undefined;
        let delayMs = feed.pollMs;
        try {
          const { status, body } = await get(feed.path, cursor === undefined ? {} : { after: cursor }, undefined, controller.signal);
          if (status !== 200) throw errorFor(status, body, feed.what);
          const page = feed.parse(body);
          if (cursor !== undefined) deliver(page.items);
          cursor = page.cursor;
          if (failures > 0) logger.info({ failures }, `${feed.what} reachable again`);
          failures = 0;
          if (page.entries >= FEED_PAGE_SIZE) delayMs = 0;
        } catch (err) {
          if (controller.signal.aborted) return;
          failures++;
          delayMs = Math.min(feed.pollMs * 2 ** failures, feed.maxBackoffMs);
          // Log the first failure and then every 10th, so an outage does not flood the log.
          if (failures === 1 || failures % 10 === 0) {
            logger.warn({ err: (err as Error).message, failures, retryInMs: delayMs }, `cannot poll ${feed.what}`);
          }
        }
        if (!controller.signal.aborted) timer = setTimeout(poll, delayMs);
      };
      void poll();

      return () => {
        controller.abort();
        if (timer !== undefined) clearTimeout(timer);
      };
    }

    return (onItem: (item: T) => void, signal: AbortSignal): void => {
      if (signal.aborted) return;
      // A wrapper per call, so the same function watched twice is counted twice.
      const watcher = (item: T) => onItem(item);
      watchers.add(watcher);
      stopPoller ??= startPoller();
      signal.addEventListener(
        "abort",
        () => {
          watchers.delete(watcher);
          if (watchers.size === 0 && stopPoller) {
            stopPoller();
            stopPoller = undefined;
          }
        },
        { once: true },
      );
    };
  }

  const watchRevocations = feedWatch<TokenRevocation>({
    path: TOKEN_REVOCATIONS_PATH,
    what: "token revocation feed",
    pollMs: options.revocationPollIntervalMs ?? 500,
    maxBackoffMs: options.revocationMaxBackoffMs ?? 10_000,
    parse: (body) => {
      const page = parseFeed(body);
      return { items: page.revocations, cursor: page.cursor, entries: page.entries };
    },
    describe: (r) => ({ revocation: r }),
  });

  const watchConfigurations = feedWatch<number>({
    path: AGENT_CONFIGURATION_CHANGES_PATH,
    what: "agent configuration change feed",
    pollMs: options.configurationPollIntervalMs ?? 500,
    maxBackoffMs: options.configurationMaxBackoffMs ?? 10_000,
    // Each changed agent once per page: a watcher re-reads the config anyway.
    parse: (body) => {
      const page = parseConfigurationFeed(body);
      return { items: [...new Set(page.agentIds)], cursor: page.cursor, entries: page.agentIds.length };
    },
    describe: (agentId) => ({ agentId }),
  });

  return {
    async getAgentInfo(agentToken: string, signal?: AbortSignal): Promise<AgentInfo> {
      const { status, body } = await get(AGENT_INFO_PATHS[0]!, {}, agentToken, signal);
      if (status !== 200) throw errorFor(status, body, "agent_info");
      return parseAgentInfo(body);
    },

    /**
     * Delivers revocations recorded after the feed's first answer to this client's poller (KAS
     * watches from start-up, before it accepts tunnels, so nothing it needs precedes that).
     */
    watchTokenRevocations(onRevoked, signal) {
      watchRevocations((r) => onRevoked({ ...r }), signal);
    },

    async getAgentConfiguration(agentId: number, signal?: AbortSignal): Promise<AgentConfigurationSnapshot> {
      const { status, body } = await get(AGENT_CONFIGURATION_PATH, { agent_id: String(agentId) }, undefined, signal);
      if (status !== 200) throw errorFor(status, body, "agent_configuration");
      return parseAgentConfiguration(body);
    },

    /** Like watchTokenRevocations: changes recorded after the feed's first answer to this client's poller. */
    watchAgentConfigurations(onChange, signal) {
      watchConfigurations((agentId) => onChange(agentId), signal);
    },

    /** GitLab's public `GET /job/allowed_agents`: `Job-Token` only, no KAS JWT. */
    async allowedAgentsForJob(jobToken: string, signal?: AbortSignal): Promise<JobAllowedAgents> {
      const { status, body } = await send("GET", JOB_ALLOWED_AGENTS_PATH, {}, { [JOB_TOKEN_HEADER]: jobToken }, undefined, false, signal);
      if (status !== 200) throw errorFor(status, body, "allowed_agents");
      return parseJobAllowedAgents(body);
    },

    async authorizeProxyUser(request: AuthorizeProxyUserRequest, signal?: AbortSignal): Promise<ProxyUserAuthorizationAnswer> {
      const payload = {
        agent_id: request.agentId,
        access_type: request.accessType,
        access_key: request.accessKey,
        ...(request.csrfToken !== undefined ? { csrf_token: request.csrfToken } : {}),
      };
      const { status, body } = await send("POST", AUTHORIZE_PROXY_USER_PATH, {}, {}, payload, true, signal);
      if (status !== 200) throw errorFor(status, body, "authorize_proxy_user");
      return parseProxyUserAuthorization(body);
    },

    async authorizeWorkspaceAccess(request: WorkspaceAccessRequest, signal?: AbortSignal): Promise<WorkspaceAccessAnswer> {
      const payload = { host: request.host, access_type: request.accessType, access_key: request.accessKey };
      const { status, body } = await send("POST", WORKSPACE_ACCESS_PATH, {}, {}, payload, true, signal);
      if (status !== 200) throw errorFor(status, body, "workspace access");
      return parseWorkspaceAccess(body);
    },

    /** 204 yes; 403 and 404 no (as GitLab's KAS reads them); 401 a bad agent token. */
    async verifyProjectAccess(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<boolean> {
      const { status, body } = await get(VERIFY_PROJECT_ACCESS_PATH, { id: fullPath }, agentToken, signal);
      if (status === 204 || status === 200) return true;
      if (status === 403 || status === 404) return false;
      throw errorFor(status, body, "verify_project_access");
    },

    async getProjectInfo(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<ProjectInfo> {
      const { status, body } = await get(PROJECT_INFO_PATH, { id: fullPath }, agentToken, signal);
      if (status !== 200) throw errorFor(status, body, "project_info");
      return parseProjectInfo(body);
    },

    async resolveRepositoryRevision(projectId, revision, signal) {
      const { status, body } = await get(REPOSITORY_COMMIT_PATH, { project_id: String(projectId), revision }, undefined, signal);
      if (status === 404) return undefined;
      const commit = (body as { commit_id?: unknown } | undefined)?.commit_id;
      if (status !== 200 || typeof commit !== "string") throw errorFor(status === 200 ? 502 : status, body, "repository commit");
      return commit;
    },

    async listRepositoryFiles(projectId, commit, signal) {
      const { status, body } = await get(REPOSITORY_TREE_PATH, { project_id: String(projectId), commit }, undefined, signal);
      const paths = (body as { paths?: unknown } | undefined)?.paths;
      if (status !== 200 || !Array.isArray(paths) || !paths.every((p) => typeof p === "string")) {
        throw errorFor(status === 200 ? 502 : status, body, "repository tree");
      }
      return paths as string[];
    },

    async readRepositoryFile(projectId, commit, path, maxBytes, signal) {
      const url = new URL(REPOSITORY_BLOB_PATH.replace(/^\//, ""), base);
      for (const [k, v] of Object.entries({ project_id: String(projectId), commit, path, max_bytes: String(maxBytes) })) url.searchParams.set(k, v);
      let res: Response;
      try {
        res = await doFetch(url, {
          headers: { "user-agent": userAgent, [KAS_API_REQUEST_HEADER]: await signKasApiRequestJwt(options.jwtSecret) },
          signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs),
          redirect: "error",
        });
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        throw new PlatformError("unavailable", `platform request ${REPOSITORY_BLOB_PATH} failed: ${(err as Error).message}`, { cause: err });
      }
      if (res.status === 404) {
        await res.body?.cancel();
        return undefined;
      }
      if (res.status === 413) {
        await res.body?.cancel();
        throw new RepositoryFileTooLargeError(path, maxBytes);
      }
      if (res.status !== 200) {
        await res.body?.cancel();
        throw errorFor(res.status, undefined, "repository blob");
      }
      const data = new Uint8Array(await res.arrayBuffer());
      if (data.byteLength > maxBytes) throw new RepositoryFileTooLargeError(path, maxBytes);
      return data;
    },

    async reportGitopsStatus(agentToken, status, signal) {
      const body = { status: toJson(ManifestProjectStatusSchema, status) };
      const res = await send("POST", GITOPS_STATUS_PATH, {}, { authorization: `Bearer ${agentToken}` }, body, true, signal);
      if (res.status !== 204) throw errorFor(res.status, res.body, "gitops_status");
    },

    /**
     * GitLab's `/api/v4/internal/kubernetes/modules/<module><url_path>` with the agent's token and
     * the KAS JWT. The request body streams to the platform; the answer, whatever its status,
     * streams back. Only the wait for the answer's head is bounded by `requestTimeoutMs`.
     */
    async sendUsageMetrics(payload: UsageMetricsPayload, signal?: AbortSignal): Promise<void> {
      const { status, body } = await send("POST", USAGE_METRICS_PATH, {}, {}, payload, true, signal);
      if (status !== 204 && status !== 200) throw errorFor(status, body, "usage_metrics");
    },

    async recordAuditEvents(events: KasAuditEvent[], signal?: AbortSignal): Promise<void> {
      const { status, body } = await send("POST", AUDIT_EVENTS_PATH, {}, {}, { events }, true, signal);
      if (status !== 204 && status !== 200) throw errorFor(status, body, "audit_events");
    },

    async makeModuleRequest(request: ModuleRequest, signal?: AbortSignal): Promise<ModuleResponse> {
      signal?.throwIfAborted();
      const url = new URL(`${MODULE_REQUEST_PATH_PREFIX.slice(1)}${encodeURIComponent(request.module)}${encodePath(request.urlPath)}`, base);
      for (const [name, values] of Object.entries(request.query)) for (const value of values) url.searchParams.append(name, value);
      const headers = new Headers();
      for (const [name, values] of Object.entries(request.headers)) for (const value of values) headers.append(name, value);
      headers.set("authorization", `Bearer ${request.agentToken}`);
      headers.set(KAS_API_REQUEST_HEADER, await signKasApiRequestJwt(options.jwtSecret));
      if (!headers.has("user-agent")) headers.set("user-agent", userAgent);
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      const onAbort = () => controller.abort(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      let res: Response;
      try {
        const hasBody = request.method !== "GET" && request.method !== "HEAD";
        res = await doFetch(url, {
          method: request.method,
          headers,
          body: hasBody ? ReadableStream.from(request.body) : undefined,
          signal: controller.signal,
          redirect: "manual",
          ...(hasBody ? { duplex: "half" } : {}),
        } as RequestInit);
      } catch (err) {
        signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted) throw signal.reason;
        const what = controller.signal.aborted ? String((controller.signal.reason as Error)?.message) : (err as Error).message;
        throw new PlatformError("unavailable", `platform module request ${request.module} failed: ${what}`, { cause: err });
      } finally {
        clearTimeout(timer);
      }
      const responseHeaders: MultiMap = {};
      res.headers.forEach((value, name) => {
        if (name !== "set-cookie") responseHeaders[name] = [value];
      });
      const cookies = res.headers.getSetCookie();
      if (cookies.length > 0) responseHeaders["set-cookie"] = cookies;
      return {
        status: res.status,
        statusText: res.statusText,
        headers: responseHeaders,
        body: responseBody(res, () => signal?.removeEventListener("abort", onAbort)),
      };
    },
  };
}

/** The answer's body as it arrives; `done` runs when it ends or fails. */
async function* responseBody(res: Response, done: () => void): AsyncIterable<Uint8Array> {
  try {
    if (res.body) yield* res.body;
  } finally {
    done();
  }
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}

function parseProjectInfo(body: unknown): ProjectInfo {
  const b = body as Record<string, unknown> | undefined;
  const repo = b?.gitaly_repository as Record<string, unknown> | undefined;
  if (!b || !isInt(b.project_id) || typeof b.default_branch !== "string" || typeof repo?.gl_project_path !== "string") {
    throw new PlatformError("unavailable", "project_info: malformed response from platform");
  }
  return { projectId: b.project_id, defaultBranch: b.default_branch, fullPath: repo.gl_project_path };
}

function parseAgentInfo(body: unknown): AgentInfo {
  const b = body as Record<string, unknown> | undefined;
  const repo = b?.gitaly_repository as Record<string, unknown> | undefined;
  if (
    !b ||
    !isInt(b.project_id) ||
    !isInt(b.agent_id) ||
    typeof b.agent_name !== "string" ||
    typeof b.default_branch !== "string" ||
    typeof repo?.gl_project_path !== "string"
  ) {
    throw new PlatformError("unavailable", "agent_info: malformed response from platform");
  }
  return {
    agentId: b.agent_id,
    agentName: b.agent_name,
    projectId: b.project_id,
    projectPath: repo.gl_project_path,
    defaultBranch: b.default_branch,
    ...(isInt(b.agent_token_id) ? { tokenId: b.agent_token_id } : {}),
  };
}

/**
 * A page of the revocation feed. An entry without `kind` is an agent token's (platforms from
 * before the other kinds); a kind this version does not know is skipped, so a newer platform
 * does not stop the feed.
 */
function parseFeed(body: unknown): { revocations: TokenRevocation[]; entries: number; cursor: string } {
  const b = body as { revocations?: unknown; cursor?: unknown } | undefined;
  if (!b || !Array.isArray(b.revocations) || typeof b.cursor !== "string") {
    throw new PlatformError("unavailable", "token revocation feed: malformed response");
  }
  const malformed = () => new PlatformError("unavailable", "token revocation feed: malformed entry");
  const revocations: TokenRevocation[] = [];
  type Entry = { kind?: unknown; agent_id?: unknown; token_id?: unknown; user_id?: unknown; job_id?: unknown } | null | undefined;
  for (const r of b.revocations as Entry[]) {
    if (!r || typeof r !== "object") throw malformed();
    switch (r.kind ?? "agent_token") {
      case "agent_token":
        if (!isInt(r.agent_id) || !isInt(r.token_id)) throw malformed();
        revocations.push({ kind: "agent_token", agentId: r.agent_id, tokenId: r.token_id });
        break;
      case "ci_job":
        if (!isInt(r.job_id)) throw malformed();
        revocations.push({ kind: "ci_job", jobId: r.job_id });
        break;
      case "personal_access_token":
        if (!isInt(r.user_id) || !isInt(r.token_id)) throw malformed();
        revocations.push({ kind: "personal_access_token", userId: r.user_id, tokenId: r.token_id });
        break;
      case "user":
        if (!isInt(r.user_id)) throw malformed();
        revocations.push({ kind: "user", userId: r.user_id });
        break;
      default:
        break;
    }
  }
  return { revocations, entries: b.revocations.length, cursor: b.cursor };
}

function parseConfigurationFeed(body: unknown): { agentIds: number[]; cursor: string } {
  const b = body as { changes?: unknown; cursor?: unknown } | undefined;
  if (!b || !Array.isArray(b.changes) || typeof b.cursor !== "string") {
    throw new PlatformError("unavailable", "agent configuration change feed: malformed response");
  }
  const agentIds: number[] = [];
  for (const c of b.changes as { agent_id?: unknown }[]) {
    if (!isInt(c?.agent_id)) throw new PlatformError("unavailable", "agent configuration change feed: malformed entry");
    agentIds.push(c.agent_id);
  }
  return { agentIds, cursor: b.cursor };
}

function parseAgentConfiguration(body: unknown): AgentConfigurationSnapshot {
  const b = body as { agent_id?: unknown; commit_id?: unknown; configuration?: unknown } | undefined;
  if (!b || !isInt(b.agent_id) || typeof b.commit_id !== "string" || typeof b.configuration !== "object" || b.configuration === null) {
    throw new PlatformError("unavailable", "agent_configuration: malformed response from platform");
  }
  try {
    // Fields a newer platform adds are skipped rather than refused.
    const config = fromJson(ConfigurationFileSchema, b.configuration as JsonValue, { ignoreUnknownFields: true });
    return { agentId: b.agent_id, commitId: b.commit_id, config };
  } catch (err) {
    throw new PlatformError("unavailable", `agent_configuration: malformed configuration: ${(err as Error).message}`, { cause: err });
  }
}
