/**
 * Who is calling the Kubernetes API proxy, and as whom the agent acts: `Authorization: Bearer
 * ci:<agent id>:<job token>` (GitLab's allowed_agents) or `Bearer pat:<agent id>:<token>`
 * (authorize_proxy_user). Successful answers are cached for a few seconds under the SHA-256 of the
 * credential; failures are not cached (concurrent look-ups of one credential share one platform
 * call). A revocation from the platform's feed (`revoke`) evicts the answers it concerns at once,
 * and an answer that was on its way when the revocation came is refused.
 */
import { createHash } from "node:crypto";
import type { ImpersonationConfig } from "../../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import {
  PlatformError,
  type JobAllowedAgents,
  type PlatformClient,
  type ProxyUserAuthorizationAnswer,
  type TokenRevocation,
} from "../../../platform-client/platform-client.js";
import { ciJobImpersonation, userImpersonation } from "../impersonation.js";
import { K8sProxyError } from "./k8s-status.js";

/** The authenticated caller, for the audit log and metrics (never holds a secret). */
export type ProxyCaller =
  | { kind: "ci_job"; jobId: number; projectId: number; pipelineId: number; userId: number; username: string }
  | { kind: "user"; userId: number; username: string; accessType: string; tokenId?: number };

export interface ProxyAuthorization {
  agentId: number;
  caller: ProxyCaller;
  impersonation: ImpersonationConfig;
  /** When the credential stops working (ms since the epoch), if the platform said. */
  expiresAt?: number;
}

/**
 * The revocations that end an authorization, as keys (`ci_job:<id>`, `user:<id>`,
 * `personal_access_token:<id>`): a job's by its job and its user, a user's by the user and the token.
 */
export function revocationKeysOf(caller: ProxyCaller): string[] {
  if (caller.kind === "ci_job") return [`ci_job:${caller.jobId}`, `user:${caller.userId}`];
  return caller.tokenId === undefined ? [`user:${caller.userId}`] : [`user:${caller.userId}`, `personal_access_token:${caller.tokenId}`];
}

/** The key a revocation ends (see revocationKeysOf); undefined for agent tokens (their tunnels close instead). */
export function revocationKey(r: TokenRevocation): string | undefined {
  switch (r.kind) {
    case "ci_job":
      return `ci_job:${r.jobId}`;
    case "personal_access_token":
      return `personal_access_token:${r.tokenId}`;
    case "user":
      return `user:${r.userId}`;
    default:
      return undefined;
  }
}

/** What a revocation means for the caller, as the proxy tells them. */
export function revocationMessage(r: TokenRevocation): string {
  switch (r.kind) {
    case "ci_job":
      return `unauthorized: CI job ${r.jobId} finished, its job token is no longer valid`;
    case "personal_access_token":
      return "unauthorized: the personal access token was revoked";
    case "user":
      return "unauthorized: the user is blocked";
    default:
      return "unauthorized: the credential was revoked";
  }
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
  /** The revocation generation when the platform was asked. */
  generation: number;
  /** Revocation keys of the answer, once it came. */
  keys?: string[];
}

/** How long a revocation is remembered to refuse answers that were already on their way. */
const revokedMemoryMs = 10 * 60_000;

export class ProxyAuthenticator {
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private readonly jobs = new Map<string, CacheEntry<JobAllowedAgents>>();
  private readonly users = new Map<string, CacheEntry<ProxyUserAuthorizationAnswer>>();
  /** Bumped by every revocation; answers remember the generation they were asked in. */
  private generation = 0;
  /** Revocation key -> generation, time and message of its latest revocation. */
  private readonly revoked = new Map<string, { generation: number; at: number; message: string }>();

  constructor(private readonly options: ProxyAuthenticatorOptions) {
    this.ttlMs = options.cacheTtlMs ?? 5_000;
    this.maxEntries = options.maxCacheEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * Authenticates and authorizes the `Authorization` header value; throws K8sProxyError. With
   * `fresh`, asks the platform even when a cached answer exists (and caches the new one).
   */
  async authorize(authorization: string | undefined, signal?: AbortSignal, options: { fresh?: boolean } = {}): Promise<ProxyAuthorization> {
    if (!authorization) throw new K8sProxyError(401, "unauthorized: no Authorization header");
    const m = /^Bearer\s+(ci|pat):(\d{1,18}):(\S+)$/i.exec(authorization.trim());
    if (!m) throw new K8sProxyError(401, "unauthorized: expected Authorization: Bearer ci:<agent id>:<job token> or pat:<agent id>:<token>");
    const kind = m[1]!.toLowerCase();
    const agentId = Number(m[2]);
    const secret = m[3]!;
    if (!Number.isSafeInteger(agentId) || agentId <= 0) throw new K8sProxyError(401, "unauthorized: invalid agent id");
    const authz = await (kind === "ci" ? this.authorizeJob(agentId, secret, signal, options.fresh) : this.authorizeUser(agentId, secret, signal, options.fresh));
    const revoked = this.revokedSince(authz);
    if (revoked) throw new K8sProxyError(401, revoked);
    return authz;
  }

  /**
   * Records a revocation from the platform: cached answers it concerns are dropped, and answers
   * asked for before it are refused from now on (see revokedSince).
   */
  revoke(revocation: TokenRevocation): void {
    const key = revocationKey(revocation);
    if (key === undefined) return;
    const now = this.now();
    this.revoked.set(key, { generation: ++this.generation, at: now, message: revocationMessage(revocation) });
    for (const [k, r] of this.revoked) if (now - r.at > revokedMemoryMs) this.revoked.delete(k);
    for (const cache of [this.jobs, this.users] as Array<Map<string, CacheEntry<unknown>>>) {
      for (const [k, entry] of cache) if (entry.keys?.includes(key)) cache.delete(k);
    }
  }

  /**
   * Why `authz` is no longer valid: a message when a revocation that concerns it came after the
   * platform was asked for it (an answer can be on its way while the revocation is delivered),
   * else undefined.
   */
  revokedSince(authz: ProxyAuthorization): string | undefined {
    const asked = askedInGeneration.get(authz) ?? 0;
    for (const key of revocationKeysOf(authz.caller)) {
      const r = this.revoked.get(key);
      if (r && r.generation > asked) return r.message;
    }
    return undefined;
  }

  private async authorizeJob(agentId: number, jobToken: string, signal: AbortSignal | undefined, fresh: boolean | undefined): Promise<ProxyAuthorization> {
    const platform = this.options.platform;
    if (!platform.allowedAgentsForJob) throw new K8sProxyError(501, "CI job access is not supported by this platform", "InternalError");
    const load = () => platform.allowedAgentsForJob!(jobToken, signal);
    const keysOf = (j: JobAllowedAgents) => [`ci_job:${j.job.id}`, `user:${j.user.id}`];
    const { answer: job, generation } = await this.cached(this.jobs, digest(jobToken), load, keysOf, fresh).catch((e: unknown) => {
      throw platformRefusal(e, "CI job token");
    });
    return derived(job, agentId, generation, () => {
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
        caller: {
          kind: "ci_job",
          jobId: job.job.id,
          projectId: job.project.id,
          pipelineId: job.pipeline.id,
          userId: job.user.id,
          username: job.user.username,
        },
        impersonation,
        ...(job.job.tokenExpiresAt !== undefined ? { expiresAt: job.job.tokenExpiresAt } : {}),
      };
    });
  }

  private async authorizeUser(agentId: number, token: string, signal: AbortSignal | undefined, fresh: boolean | undefined): Promise<ProxyAuthorization> {
    const platform = this.options.platform;
    if (!platform.authorizeProxyUser) throw new K8sProxyError(501, "user access is not supported by this platform", "InternalError");
    const accessType = "personal_access_token";
    const load = () => platform.authorizeProxyUser!({ agentId, accessType, accessKey: token }, signal);
    const keysOf = (a: ProxyUserAuthorizationAnswer) =>
      a.personalAccessToken ? [`user:${a.user.id}`, `personal_access_token:${a.personalAccessToken.id}`] : [`user:${a.user.id}`];
    const { answer: auth, generation } = await this.cached(this.users, digest(`${agentId}:${token}`), load, keysOf, fresh).catch((e: unknown) => {
      throw platformRefusal(e, "personal access token", agentId);
    });
    const pat = auth.personalAccessToken;
    return derived(auth, agentId, generation, () => ({
      agentId,
      caller: { kind: "user", userId: auth.user.id, username: auth.user.username, accessType, ...(pat ? { tokenId: pat.id } : {}) },
      impersonation: userImpersonation(auth, accessType),
      ...(pat?.expiresAt !== undefined ? { expiresAt: pat.expiresAt } : {}),
    }));
  }

  private async cached<T>(
    cache: Map<string, CacheEntry<T>>,
    key: string,
    load: () => Promise<T>,
    keysOf: (answer: T) => string[],
    fresh: boolean | undefined,
  ): Promise<{ answer: T; generation: number }> {
    const now = this.now();
    const hit = cache.get(key);
    if (hit && hit.expiresAt > now && !fresh) return { answer: await hit.value, generation: hit.generation };
    if (hit) cache.delete(key);
    // In flight: shared until it settles; a failure removes itself at once.
    const value = load();
    const entry: CacheEntry<T> = { expiresAt: Number.POSITIVE_INFINITY, value, generation: this.generation };
    cache.set(key, entry);
    value.then(
      (answer) => {
        entry.keys = keysOf(answer);
        entry.expiresAt = this.now() + this.ttlMs;
        // Revoked while it was on its way: not worth keeping (revokedSince refuses it anyway).
        if (entry.keys.some((k) => (this.revoked.get(k)?.generation ?? 0) > entry.generation) && cache.get(key) === entry) cache.delete(key);
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
    return { answer: await value, generation: entry.generation };
  }
}

/** The revocation generation in which the platform was asked for an authorization. */
const askedInGeneration = new WeakMap<ProxyAuthorization, number>();

/**
 * What a cached platform answer means for one agent, computed once per answer (the impersonation
 * config parses the ci_access entry's JSON): requests within the cache TTL reuse it, refusals
 * included. Keyed by the answer object, so it goes when the answer leaves the cache.
 */
const derivedAuthorizations = new WeakMap<object, Map<number, ProxyAuthorization | K8sProxyError>>();

function derived(answer: object, agentId: number, generation: number, compute: () => ProxyAuthorization): ProxyAuthorization {
  let perAgent = derivedAuthorizations.get(answer);
  if (!perAgent) derivedAuthorizations.set(answer, (perAgent = new Map()));
  let result = perAgent.get(agentId);
  if (result === undefined) {
    try {
      result = compute();
      askedInGeneration.set(result, generation);
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
