import pino from "pino";
import type { Logger } from "pino";
import { KAS_API_REQUEST_HEADER, signKasApiRequestJwt } from "../../auth/jwt.js";
import { AGENT_INFO_PATHS, TOKEN_REVOCATIONS_PATH } from "../api/internal-api.js";
import { PlatformError, type AgentInfo, type PlatformClient, type TokenRevocation } from "../platform-client.js";

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
 * (createInternalApi) and, for agent_info, against GitLab itself; the revocation watch needs our
 * `token_revocations` feed (against GitLab it keeps failing with back-off and delivers nothing).
 */
export function createHttpPlatformClient(options: HttpPlatformClientOptions): PlatformClient {
  const base = new URL(options.baseUrl.endsWith("/") ? options.baseUrl : `${options.baseUrl}/`);
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.requestTimeoutMs ?? 10_000;
  const pollMs = options.revocationPollIntervalMs ?? 500;
  const maxBackoffMs = options.revocationMaxBackoffMs ?? 10_000;
  const logger = options.logger ?? pino({ level: "silent" });
  const userAgent = options.userAgent ?? "kasbridge";

  /** One GET with JWT (and agent token), the body read within the timeout. */
  async function get(
    path: string,
    query: Record<string, string>,
    agentToken: string | undefined,
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
      const headers: Record<string, string> = {
        [KAS_API_REQUEST_HEADER]: await signKasApiRequestJwt(options.jwtSecret),
        accept: "application/json",
        "user-agent": userAgent,
      };
      if (agentToken !== undefined) headers.authorization = `Bearer ${agentToken}`;
      const res = await doFetch(url, { method: "GET", headers, signal: controller.signal, redirect: "error" });
      const text = await res.text();
      let body: unknown;
      try {
        body = text === "" ? undefined : JSON.parse(text);
      } catch {
        body = undefined;
      }
      return { status: res.status, body };
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

  // ---- revocation watch: one shared poller however many watchers and agents ----

  const watchers = new Set<(r: TokenRevocation) => void>();
  let stopPoller: (() => void) | undefined;

  function startPoller(): () => void {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let cursor: string | undefined;
    let failures = 0;

    const poll = async () => {
      timer = undefined;
      let delayMs = pollMs;
      try {
        const { status, body } = await get(TOKEN_REVOCATIONS_PATH, cursor === undefined ? {} : { after: cursor }, undefined, controller.signal);
        if (status !== 200) throw errorFor(status, body, "token revocation feed");
        const page = parseFeed(body);
        // The first answer only positions the cursor at "now".
        if (cursor !== undefined) deliver(page.revocations);
        cursor = page.cursor;
        if (failures > 0) logger.info({ failures }, "token revocation feed reachable again");
        failures = 0;
        if (page.revocations.length >= FEED_PAGE_SIZE) delayMs = 0;
      } catch (err) {
        if (controller.signal.aborted) return;
        failures++;
        delayMs = Math.min(pollMs * 2 ** failures, maxBackoffMs);
        // Log the first failure and then every 10th, so an outage does not flood the log.
        if (failures === 1 || failures % 10 === 0) {
          logger.warn({ err: (err as Error).message, failures, retryInMs: delayMs }, "cannot poll token revocation feed");
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

  function deliver(revocations: TokenRevocation[]): void {
    for (const r of revocations) {
      for (const watcher of [...watchers]) {
        try {
          watcher({ ...r });
        } catch (err) {
          logger.error({ err, agentId: r.agentId, tokenId: r.tokenId }, "token revocation watcher failed");
        }
      }
    }
  }

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
      if (signal.aborted) return;
      // A wrapper per call, so the same function watched twice is counted twice.
      const watcher = (r: TokenRevocation) => onRevoked(r);
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
    },
  };
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
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

function parseFeed(body: unknown): { revocations: TokenRevocation[]; cursor: string } {
  const b = body as { revocations?: unknown; cursor?: unknown } | undefined;
  if (!b || !Array.isArray(b.revocations) || typeof b.cursor !== "string") {
    throw new PlatformError("unavailable", "token revocation feed: malformed response");
  }
  const revocations: TokenRevocation[] = [];
  for (const r of b.revocations as { agent_id?: unknown; token_id?: unknown }[]) {
    if (!isInt(r?.agent_id) || !isInt(r.token_id)) throw new PlatformError("unavailable", "token revocation feed: malformed entry");
    revocations.push({ agentId: r.agent_id, tokenId: r.token_id });
  }
  return { revocations, cursor: b.cursor };
}
