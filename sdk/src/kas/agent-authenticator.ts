import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { PlatformError, type AgentInfo, type AgentTokenRevocation, type PlatformClient } from "../platform-client/platform-client.js";
import { bearerToken } from "../auth/bearer.js";
import { connectionRateLimitError, type AgentConnectionLimiter } from "./connection-limiter.js";

export interface AgentAuthenticatorOptions {
  platform: PlatformClient;
  logger: Logger;
  /** How long a successful agent_info answer is reused. Default 60 000 ms; revocations evict at once. */
  cacheTtlMs?: number;
  /** How long an "unknown token" answer is reused, so a bad token cannot flood the platform. Default 10 000 ms. */
  negativeCacheTtlMs?: number;
  /** The clock of the cache, in ms. Default Date.now (tests pass their own). */
  now?: () => number;
  /** Limits the calls each token may open per minute; over it: RESOURCE_EXHAUSTED. Default: none. */
  limiter?: AgentConnectionLimiter;
  /** Told about each call refused by `limiter` (metrics). */
  onRateLimited?(): void;
}

/** An authenticated agent call: who it is, and a signal that aborts when its token is revoked. */
export interface AuthenticatedAgent {
  info: AgentInfo;
  revoked: AbortSignal;
}

/** The error calls of a revoked token end with. */
export function tokenRevokedError(): ConnectError {
  return new ConnectError("agent token revoked", Code.Unauthenticated);
}

/** How long a revoked token id is remembered (longer than any agent_info round trip). */
const revokedMemoryMs = 10 * 60_000;

interface CacheEntry {
  expiresAt: number;
  result: Promise<AgentInfo>;
}

/**
 * Authenticates agent calls (`authorization: Bearer <agent token>`) through the platform's
 * agent_info, caching briefly. Tokens are only kept as SHA-256 keys, never logged. When the platform
 * reports a revocation, cached answers for the token are dropped and every call that used it is
 * aborted, which closes its tunnels.
 */
export class AgentAuthenticator {
  private readonly cache = new Map<string, CacheEntry>();
  /** Who to tell when a token is revoked, by token id: one entry per connected token, not per stream. */
  private readonly revocationListeners = new Map<number, Set<(reason: ConnectError) => void>>();
  /** Token ids revoked recently: a stream whose agent_info answer raced a revocation is refused. */
  private readonly recentlyRevoked = new Map<number, number>();
  private readonly stopWatching = new AbortController();
  private readonly ttl: number;
  private readonly negativeTtl: number;
  private readonly now: () => number;

  constructor(private readonly options: AgentAuthenticatorOptions) {
    this.ttl = options.cacheTtlMs ?? 60_000;
    this.negativeTtl = options.negativeCacheTtlMs ?? 10_000;
    this.now = options.now ?? Date.now;
    options.platform.watchTokenRevocations((r) => {
      if (r.kind === "agent_token") this.revoked(r);
    }, this.stopWatching.signal);
  }

  /** Resolves the caller's identity from request headers or throws UNAUTHENTICATED/UNAVAILABLE. */
  async authenticate(header: Headers, signal?: AbortSignal): Promise<AgentInfo> {
    const token = bearerToken(header.get("authorization"));
    if (!token) throw new ConnectError("missing agent token (authorization: Bearer <token>)", Code.Unauthenticated);
    if (this.options.limiter && !(await this.options.limiter.allow(token))) {
      this.options.onRateLimited?.();
      throw connectionRateLimitError();
    }
    const key = createHash("sha256").update(token).digest("hex");
    const now = this.now();
    let entry = this.cache.get(key);
    if (!entry || entry.expiresAt <= now) {
      // Shared by concurrent streams with the same token, so no one stream's signal may cancel it;
      // each caller stops waiting on its own signal instead (below).
      const result = this.options.platform.getAgentInfo(token);
      entry = { expiresAt: now + this.ttl, result };
      this.cache.set(key, entry);
      const stored = entry;
      result.catch((error: unknown) => {
        // Only "token unknown" is worth remembering; a platform outage must not stick.
        if (error instanceof PlatformError && error.kind === "unauthenticated") stored.expiresAt = this.now() + this.negativeTtl;
        else if (this.cache.get(key) === stored) this.cache.delete(key);
      });
      this.sweep(now);
    }
    try {
      return await (signal ? untilAborted(entry.result, signal) : entry.result);
    } catch (error) {
      throw platformErrorToConnectError(error);
    }
  }

  /**
   * Calls `listener` once when the token of `info` is revoked. Returns a function that stops
   * watching, or undefined (and never calls `listener`) when the token is already known revoked.
   * Costs a set entry per listener: callers with many streams per token share one listener.
   */
  onRevoked(info: AgentInfo, listener: (reason: ConnectError) => void): (() => void) | undefined {
    const tokenId = info.tokenId;
    if (tokenId === undefined) return noop;
    if (this.recentlyRevoked.has(tokenId)) return undefined;
    let listeners = this.revocationListeners.get(tokenId);
    if (!listeners) {
      listeners = new Set();
      this.revocationListeners.set(tokenId, listeners);
    }
    listeners.add(listener);
    const held = listeners;
    return () => {
      if (held.delete(listener) && held.size === 0 && this.revocationListeners.get(tokenId) === held) {
        this.revocationListeners.delete(tokenId);
      }
    };
  }

  /** A signal aborted when `info`'s token is revoked; call `release` when the call ends. */
  watchToken(info: AgentInfo): { signal: AbortSignal; release(): void } {
    const controller = new AbortController();
    const release = this.onRevoked(info, (reason) => controller.abort(reason));
    if (!release) return { signal: AbortSignal.abort(tokenRevokedError()), release: noop };
    return { signal: controller.signal, release };
  }

  close(): void {
    this.stopWatching.abort();
    this.cache.clear();
  }

  private revoked(revocation: AgentTokenRevocation): void {
    const now = this.now();
    this.recentlyRevoked.set(revocation.tokenId, now);
    for (const [id, at] of this.recentlyRevoked) if (now - at > revokedMemoryMs) this.recentlyRevoked.delete(id);
    for (const [key, entry] of this.cache) {
      entry.result.then(
        (info) => {
          if (info.tokenId === revocation.tokenId && this.cache.get(key) === entry) this.cache.delete(key);
        },
        () => {},
      );
    }
    const listeners = this.revocationListeners.get(revocation.tokenId);
    if (listeners) {
      this.revocationListeners.delete(revocation.tokenId);
      this.options.logger.info({ agentId: revocation.agentId, tokenId: revocation.tokenId }, "agent token revoked: closing its streams");
      const reason = tokenRevokedError();
      // A copy: a listener may release others (e.g. end calls that share its connection).
      for (const listener of [...listeners]) {
        try {
          listener(reason);
        } catch (error) {
          this.options.logger.warn({ err: error, tokenId: revocation.tokenId }, "token revocation listener threw");
        }
      }
    }
  }

  private sweep(now: number): void {
    if (this.cache.size < 10_000) return;
    for (const [key, entry] of this.cache) if (entry.expiresAt <= now) this.cache.delete(key);
  }
}

/** `promise`, or a rejection as soon as `signal` aborts (the promise itself runs on). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(ConnectError.from(signal.reason ?? new ConnectError("call cancelled", Code.Canceled)));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(ConnectError.from(signal.reason ?? new ConnectError("call cancelled", Code.Canceled)));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

function noop(): void {}

/** A platform failure as the gRPC status KAS answers agents with. */
export function platformErrorToConnectError(error: unknown): ConnectError {
  if (error instanceof PlatformError) {
    switch (error.kind) {
      case "unauthenticated":
        return new ConnectError("agent token is invalid or revoked", Code.Unauthenticated);
      case "forbidden":
        return new ConnectError(error.message, Code.PermissionDenied);
      case "not_found":
        return new ConnectError(error.message, Code.NotFound);
      default:
        return new ConnectError(`platform unavailable: ${error.message}`, Code.Unavailable);
    }
  }
  return ConnectError.from(error);
}
