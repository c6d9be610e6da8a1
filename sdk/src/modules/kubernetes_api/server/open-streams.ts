/**
 * The Kubernetes API proxy's running requests (watches, `logs -f`, exec, attach, port-forward…),
 * grouped by the credential that opened them, so they end when that credential stops being valid:
 *
 * - at once when the platform's revocation feed (`watchTokenRevocations`, the mechanism that
 *   closes a revoked agent token's tunnels) reports the CI job finished, the personal access token
 *   revoked or the user blocked;
 * - when the credential expires (the platform's answer says when: a timer at that instant);
 * - as a backstop, when a periodic re-authorization (and one after each change of the agent's
 *   configuration) is refused or yields another identity: this covers what no feed signals
 *   (membership and role changes, a project removed from ci_access or user_access) and platforms
 *   without our feed (GitLab itself). A platform that cannot be reached ends nothing.
 *
 * GitLab's KAS authorizes a request once, when it starts; a watch could run for hours after.
 */
import { equals } from "@bufbuild/protobuf";
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { ImpersonationConfigSchema } from "../../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import type { PlatformClient, TokenRevocation } from "../../../platform-client/platform-client.js";
import { maxTimerDelayMs } from "../../../util/timers.js";
import { K8sProxyError } from "./k8s-status.js";
import { revocationKey, revocationKeysOf, revocationMessage, type ProxyAuthenticator, type ProxyAuthorization } from "./proxy-auth.js";

export interface OpenStreamsOptions {
  auth: ProxyAuthenticator;
  platform: PlatformClient;
  logger: Logger;
  /** Interval of the backstop re-authorization of each credential with open streams; 0 turns it off. */
  reauthorizeIntervalMs: number;
}

/** Ends one request with the reason (a 401/403 Status if nothing was answered yet, else a cut). */
export type EndStream = (reason: K8sProxyError) => void;

/** The open streams of one credential for one agent. */
interface CredentialGroup {
  key: string;
  /** The client's Authorization header, to re-authorize with (in memory only while streams are open; never logged). */
  authorization: string;
  authz: ProxyAuthorization;
  streams: Set<EndStream>;
  keys: string[];
  expiryTimer?: NodeJS.Timeout;
  recheckTimer?: NodeJS.Timeout;
  /** Aborts a re-authorization in flight when the group goes. */
  recheck?: AbortController;
  /** Why to re-authorize again once the one in flight is done. */
  again?: string;
}

export class OpenStreams {
  private readonly groups = new Map<string, CredentialGroup>();
  /** Revocation key -> the groups it ends. */
  private readonly byKey = new Map<string, Set<CredentialGroup>>();
  private readonly watching = new AbortController();
  private closed = false;

  constructor(private readonly options: OpenStreamsOptions) {
    const { platform } = options;
    platform.watchTokenRevocations((r) => this.revoked(r), this.watching.signal);
    platform.watchAgentConfigurations?.((agentId) => this.configurationChanged(agentId), this.watching.signal);
  }

  /** Streams open now. */
  get size(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.streams.size;
    return n;
  }

  /**
   * Registers a running request authorized by `authz` (from the `authorization` header); `end` is
   * called at most once when the credential stops being valid. Call the returned function when the
   * request ends. A credential revoked while the request was being set up ends it at once.
   */
  track(authorization: string, authz: ProxyAuthorization, end: EndStream): () => void {
    let ended = false;
    const stream: EndStream = (reason) => {
      if (ended) return;
      ended = true;
      end(reason);
    };
    const revoked = this.options.auth.revokedSince(authz);
    if (revoked || this.closed) {
      stream(new K8sProxyError(401, revoked ?? "unauthorized: KAS is shutting down"));
      return noop;
    }
    if (authz.expiresAt !== undefined && authz.expiresAt <= Date.now()) {
      stream(new K8sProxyError(401, expiredMessage(authz)));
      return noop;
    }
    const key = `${authz.agentId}:${createHash("sha256").update(authorization).digest("base64url")}`;
    const existing = this.groups.get(key);
    // A newer answer for the credential: it may end the older streams (another identity).
    if (existing && existing.authz !== authz) this.refreshed(existing, authz);
    let group = this.groups.get(key);
    if (!group) {
      group = { key, authorization, authz, streams: new Set(), keys: [] };
      this.groups.set(key, group);
      this.index(group, authz);
      this.armRecheck(group, true);
    }
    group.streams.add(stream);
    const held = group;
    return () => {
      ended = true;
      held.streams.delete(stream);
      if (held.streams.size === 0) this.drop(held);
    };
  }

  /** Stops watching; ends nothing (the proxy ends its requests itself when it closes). */
  close(): void {
    this.closed = true;
    this.watching.abort();
    for (const group of [...this.groups.values()]) this.drop(group);
  }

  private revoked(revocation: TokenRevocation): void {
    this.options.auth.revoke(revocation);
    const key = revocationKey(revocation);
    const groups = key === undefined ? undefined : this.byKey.get(key);
    if (!groups) return;
    const reason = new K8sProxyError(401, revocationMessage(revocation));
    for (const group of [...groups]) this.endGroup(group, reason, "revoked");
  }

  private configurationChanged(agentId: number): void {
    for (const group of this.groups.values()) if (group.authz.agentId === agentId) void this.reauthorize(group, "agent configuration changed");
  }

  private index(group: CredentialGroup, authz: ProxyAuthorization): void {
    for (const k of group.keys) this.byKey.get(k)?.delete(group);
    group.keys = revocationKeysOf(authz.caller);
    for (const k of group.keys) {
      let set = this.byKey.get(k);
      if (!set) this.byKey.set(k, (set = new Set()));
      set.add(group);
    }
    this.armExpiry(group, authz.expiresAt);
  }

  /** A newer authorization of the same credential (another request, a re-check). */
  private refreshed(group: CredentialGroup, authz: ProxyAuthorization): void {
    if (!equals(ImpersonationConfigSchema, group.authz.impersonation, authz.impersonation)) {
      // The identity the open streams act as is no longer the credential's.
      this.endGroup(group, new K8sProxyError(401, "unauthorized: the authorization changed since the request started"), "identity changed");
      return;
    }
    group.authz = authz;
    this.index(group, authz);
  }

  private armExpiry(group: CredentialGroup, expiresAt: number | undefined): void {
    if (group.expiryTimer) clearTimeout(group.expiryTimer);
    group.expiryTimer = undefined;
    if (expiresAt === undefined) return;
    const fire = () => {
      group.expiryTimer = undefined;
      const left = expiresAt - Date.now();
      // setTimeout cannot wait longer than ~24.8 days: wait in steps.
      if (left > 0) group.expiryTimer = setTimeout(fire, Math.min(left, maxTimerDelayMs)).unref();
      else this.endGroup(group, new K8sProxyError(401, expiredMessage(group.authz)), "expired");
    };
    fire();
  }

  private armRecheck(group: CredentialGroup, first: boolean): void {
    const interval = this.options.reauthorizeIntervalMs;
    if (!(interval > 0) || this.closed) return;
    // The first check at a random point of the interval, so credentials opened together spread out.
    const delay = first ? interval / 2 + Math.random() * (interval / 2) : interval;
    group.recheckTimer = setTimeout(() => {
      group.recheckTimer = undefined;
      void this.reauthorize(group, "periodic re-authorization").finally(() => {
        if (this.groups.get(group.key) === group) this.armRecheck(group, false);
      });
    }, Math.min(delay, maxTimerDelayMs));
    group.recheckTimer.unref();
  }

  /** Asks the platform again; a refusal or another identity ends the group, an outage ends nothing. */
  private async reauthorize(group: CredentialGroup, why: string): Promise<void> {
    if (group.recheck) {
      // One at a time; the one in flight may have been asked before the change: ask once more after it.
      group.again = why;
      return;
    }
    const controller = (group.recheck = new AbortController());
    try {
      const authz = await this.options.auth.authorize(group.authorization, controller.signal, { fresh: true });
      if (this.groups.get(group.key) === group && group.authz !== authz) this.refreshed(group, authz);
    } catch (e) {
      if (controller.signal.aborted || this.groups.get(group.key) !== group) return;
      const err = e instanceof K8sProxyError ? e : new K8sProxyError(500, (e as Error)?.message ?? String(e));
      if (err.code === 401 || err.code === 403 || err.code === 404) {
        this.endGroup(group, err, why);
      } else {
        this.options.logger.warn({ agentId: group.authz.agentId, code: err.code, error: err.message, why }, "k8s proxy: cannot re-authorize open streams; they stay open");
      }
    } finally {
      if (group.recheck === controller) group.recheck = undefined;
    }
    const again = group.again;
    group.again = undefined;
    if (again !== undefined && this.groups.get(group.key) === group) await this.reauthorize(group, again);
  }

  private endGroup(group: CredentialGroup, reason: K8sProxyError, why: string): void {
    if (this.groups.get(group.key) !== group) return;
    const c = group.authz.caller;
    this.options.logger.info(
      {
        caller: c.kind,
        ...(c.kind === "ci_job" ? { jobId: c.jobId } : { userId: c.userId, username: c.username }),
        agentId: group.authz.agentId,
        streams: group.streams.size,
        why,
        reason: reason.message,
      },
      "k8s proxy: ending streams whose credential is no longer valid",
    );
    const streams = [...group.streams];
    this.drop(group);
    for (const end of streams) {
      try {
        end(reason);
      } catch (err) {
        this.options.logger.error({ err }, "k8s proxy: ending a stream failed");
      }
    }
  }

  private drop(group: CredentialGroup): void {
    if (this.groups.get(group.key) === group) this.groups.delete(group.key);
    for (const k of group.keys) {
      const set = this.byKey.get(k);
      set?.delete(group);
      if (set?.size === 0) this.byKey.delete(k);
    }
    if (group.expiryTimer) clearTimeout(group.expiryTimer);
    if (group.recheckTimer) clearTimeout(group.recheckTimer);
    group.recheck?.abort();
    group.streams.clear();
  }
}

function expiredMessage(authz: ProxyAuthorization): string {
  return authz.caller.kind === "ci_job" ? `unauthorized: the job token of CI job ${authz.caller.jobId} expired` : "unauthorized: the personal access token expired";
}

function noop(): void {}
