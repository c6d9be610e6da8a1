/**
 * Who is calling the Kubernetes API proxy, and as whom the agent acts: `Authorization: Bearer
 * ci:<agent id>:<job token>` (GitLab's allowed_agents) or `Bearer pat:<agent id>:<token>`
 * (authorize_proxy_user). Successful answers are cached for a few seconds under the SHA-256 of the
 * credential, so a finished or revoked token stops working within that time; failures are not
 * cached (concurrent look-ups of one credential share one platform call).
 */
import { createHash } from "node:crypto";
import type { ImpersonationConfig } from "../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import { PlatformError, type JobAllowedAgents, type PlatformClient, type ProxyUserAuthorizationAnswer } from "../platform/platform-client.js";
import { ciJobImpersonation, userImpersonation } from "./impersonation.js";
import { K8sProxyError } from "./k8s-status.js";

/** The authenticated caller, for the audit log and metrics (never holds a secret). */
export type ProxyCaller =
  | { kind: "ci_job"; jobId: number; projectId: number; pipelineId: number; username: string }
  | { kind: "user"; userId: number; username: string; accessType: string };

export interface ProxyAuthorization {
  agentId: number;
  caller: ProxyCaller;
  impersonation: ImpersonationConfig;
}

export interface ProxyAuthenticatorOptions {
  platform: PlatformClient;
  /** How long a successful platform answer is reused. Default 5 000 ms. */
  cacheTtlMs?: number;
  /** Most cached answers; the oldest go first. Default 10 000. */
  maxCacheEntries?: number;
  /** The clock of the cache, in ms. Default Date.now (tests pass their own). */
  now?: () => number;
}

interface CacheEntry<T> {
  expiresAt: number;
  value: Promise<T>;
}

export class ProxyAuthenticator {
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly jobs = new Map<string, CacheEntry<JobAllowedAgents>>();
  private readonly users = new Map<string, CacheEntry<ProxyUserAuthorizationAnswer>>();

  constructor(private readonly options: ProxyAuthenticatorOptions) {
    this.ttlMs = options.cacheTtlMs ?? 5_000;
    this.maxEntries = options.maxCacheEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Authenticates and authorizes the `Authorization` header value; throws K8sProxyError. */
  async authorize(authorization: string | undefined, signal?: AbortSignal): Promise<ProxyAuthorization> {
    if (!authorization) throw new K8sProxyError(401, "unauthorized: no Authorization header");
    const m = /^Bearer\s+(ci|pat):(\d{1,18}):(\S+)$/i.exec(authorization.trim());
    if (!m) throw new K8sProxyError(401, "unauthorized: expected Authorization: Bearer ci:<agent id>:<job token> or pat:<agent id>:<token>");
    const kind = m[1]!.toLowerCase();
    const agentId = Number(m[2]);
    const secret = m[3]!;
    if (!Number.isSafeInteger(agentId) || agentId <= 0) throw new K8sProxyError(401, "unauthorized: invalid agent id");
    return kind === "ci" ? this.authorizeJob(agentId, secret, signal) : this.authorizeUser(agentId, secret, signal);
  }

  private async authorizeJob(agentId: number, jobToken: string, signal?: AbortSignal): Promise<ProxyAuthorization> {
    const platform = this.options.platform;
    if (!platform.allowedAgentsForJob) throw new K8sProxyError(501, "CI job access is not supported by this platform", "InternalError");
    const job = await this.cached(this.jobs, digest(jobToken), () => platform.allowedAgentsForJob!(jobToken, signal)).catch((e: unknown) => {
      throw platformRefusal(e, "CI job token");
    });
    return derived(job, agentId, () => {
      const agent = job.allowedAgents.find((a) => a.id === agentId);
      if (!agent) throw new K8sProxyError(403, `forbidden: project ${job.project.id} (CI job ${job.job.id}) may not use agent ${agentId}`);
      let impersonation: ImpersonationConfig;
      try {
        impersonation = ciJobImpersonation(job, agent);
      } catch (e) {
        throw new K8sProxyError(403, `forbidden: agent ${agentId}'s ci_access for this project is not usable: ${(e as Error).message}`);
      }
      return {
        agentId,
        caller: { kind: "ci_job", jobId: job.job.id, projectId: job.project.id, pipelineId: job.pipeline.id, username: job.user.username },
        impersonation,
      };
    });
  }

  private async authorizeUser(agentId: number, token: string, signal?: AbortSignal): Promise<ProxyAuthorization> {
    const platform = this.options.platform;
    if (!platform.authorizeProxyUser) throw new K8sProxyError(501, "user access is not supported by this platform", "InternalError");
    const accessType = "personal_access_token";
    const auth = await this.cached(this.users, digest(`${agentId}:${token}`), () =>
      platform.authorizeProxyUser!({ agentId, accessType, accessKey: token }, signal),
    ).catch((e: unknown) => {
      throw platformRefusal(e, "personal access token", agentId);
    });
    return derived(auth, agentId, () => ({
      agentId,
      caller: { kind: "user", userId: auth.user.id, username: auth.user.username, accessType },
      impersonation: userImpersonation(auth, accessType),
    }));
  }

  private cached<T>(cache: Map<string, CacheEntry<T>>, key: string, load: () => Promise<T>): Promise<T> {
    const now = this.now();
    const hit = cache.get(key);
    if (hit && hit.expiresAt > now) return hit.value;
    if (hit) cache.delete(key);
    // In flight: shared until it settles; a failure removes itself at once.
    const value = load();
    const entry: CacheEntry<T> = { expiresAt: Number.POSITIVE_INFINITY, value };
    cache.set(key, entry);
    value.then(
      () => {
        entry.expiresAt = this.now() + this.ttlMs;
      },
      () => {
        if (cache.get(key) === entry) cache.delete(key);
      },
    );
    if (cache.size > this.maxEntries) {
      for (const [k, e] of cache) {
        if (cache.size <= this.maxEntries) break;
        if (e.expiresAt !== Number.POSITIVE_INFINITY) cache.delete(k);
      }
    }
    return value;
  }
}

/**
 * What a cached platform answer means for one agent, computed once per answer (the impersonation
 * config parses the ci_access entry's JSON): requests within the cache TTL reuse it, refusals
 * included. Keyed by the answer object, so it goes when the answer leaves the cache.
 */
const derivedAuthorizations = new WeakMap<object, Map<number, ProxyAuthorization | K8sProxyError>>();

function derived(answer: object, agentId: number, compute: () => ProxyAuthorization): ProxyAuthorization {
  let perAgent = derivedAuthorizations.get(answer);
  if (!perAgent) derivedAuthorizations.set(answer, (perAgent = new Map()));
  let result = perAgent.get(agentId);
  if (result === undefined) {
    try {
      result = compute();
    } catch (e) {
      if (!(e instanceof K8sProxyError)) throw e;
      result = e;
    }
    perAgent.set(agentId, result);
  }
  if (result instanceof K8sProxyError) throw result;
  return result;
}

function digest(secret: string): string {
  return createHash("sha256").update(secret).digest("base64url");
}

function platformRefusal(e: unknown, what: string, agentId?: number): K8sProxyError {
  if (e instanceof K8sProxyError) return e;
  if (e instanceof PlatformError) {
    switch (e.kind) {
      case "unauthenticated":
        return new K8sProxyError(401, `unauthorized: invalid, expired or revoked ${what}`);
      case "forbidden":
        return new K8sProxyError(403, agentId !== undefined ? `forbidden: access to agent ${agentId} denied` : `forbidden: ${e.message}`);
      case "not_found":
        return new K8sProxyError(agentId !== undefined ? 403 : 404, agentId !== undefined ? `forbidden: access to agent ${agentId} denied` : "not found");
      case "unavailable":
        return new K8sProxyError(503, "platform unavailable, try again later");
    }
  }
  return new K8sProxyError(500, `authorization failed: ${(e as Error)?.message ?? String(e)}`);
}
