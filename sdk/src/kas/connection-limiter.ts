import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * Limits how many agent calls (each tunnel stream, registration and configuration stream is one)
 * a token may open per minute: GitLab's `agent.listen.connections_per_token_per_minute`.
 */
export interface AgentConnectionLimiter {
  /** Counts one call of `token`; false when the token is over its limit for this minute. */
  allow(token: string): Promise<boolean>;
}

/** GitLab's default `connections_per_token_per_minute`. */
export const DEFAULT_CONNECTIONS_PER_TOKEN_PER_MINUTE = 40_000;

/** What a call over the limit fails with (GitLab's words). */
export function connectionRateLimitError(): ConnectError {
  return new ConnectError("new connection rate limit exhausted for this agent, try again later", Code.ResourceExhausted);
}

/**
 * GitLab's key of a token for limits and caches: SHA-256 of its first half (the token cannot be
 * recovered from it, and it is never stored).
 */
export function agentTokenKey(token: string): Buffer {
  return createHash("sha256").update(token.slice(0, Math.floor(token.length / 2))).digest();
}

/**
 * The limit for one KAS: a counter per token and minute of the clock (as GitLab's Redis limiter:
 * the count starts again at each minute).
 */
export class InMemoryConnectionLimiter implements AgentConnectionLimiter {
  private minute = -1;
  private counts = new Map<string, number>();

  constructor(
    private readonly limitPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  allow(token: string): Promise<boolean> {
    return Promise.resolve(this.count(agentTokenKey(token).toString("base64")));
  }

  /** Counts one call of the token with this key; false when over the limit. */
  count(key: string): boolean {
    const minute = Math.floor(this.now() / 60_000);
    if (minute !== this.minute) {
      this.minute = minute;
      this.counts = new Map();
    }
    const n = this.counts.get(key) ?? 0;
    if (n >= this.limitPerMinute) return false;
    this.counts.set(key, n + 1);
    return true;
  }
}
