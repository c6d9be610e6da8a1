import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Prefix of agent tokens, as GitLab's `Clusters::AgentToken::TOKEN_PREFIX`. */
export const AGENT_TOKEN_PREFIX = "glagent-";
/** Prefix of personal access tokens, as GitLab's. */
export const PERSONAL_ACCESS_TOKEN_PREFIX = "glpat-";

/** Random characters after the prefix of a generated agent token (GitLab: Devise.friendly_token(50)). */
export const AGENT_TOKEN_RANDOM_CHARS = 50;
/** Random characters after the prefix of a generated personal access token. */
export const PERSONAL_ACCESS_TOKEN_RANDOM_CHARS = 40;

const BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
// Largest multiple of 62 that fits in a byte; bytes at or above it are rejected so every
// character is equally likely (plain `byte % 62` would favour the first 8 characters).
const BASE62_REJECT_AT = 248;

/** `length` characters of [A-Za-z0-9] drawn uniformly from crypto.randomBytes (≈5.95 bits each). */
export function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length - out.length + 8)) {
      if (byte >= BASE62_REJECT_AT) continue;
      out += BASE62[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

/** A new agent token: `glagent-` + 50 base62 characters (≈297 bits of entropy). */
export function generateAgentToken(): string {
  return AGENT_TOKEN_PREFIX + randomBase62(AGENT_TOKEN_RANDOM_CHARS);
}

/** A new personal access token: `glpat-` + 40 base62 characters (≈238 bits of entropy). */
export function generatePersonalAccessToken(): string {
  return PERSONAL_ACCESS_TOKEN_PREFIX + randomBase62(PERSONAL_ACCESS_TOKEN_RANDOM_CHARS);
}

/**
 * The digest under which a token is stored and looked up: hex SHA-256 of the token's UTF-8 bytes.
 *
 * Why plain SHA-256 and not HMAC or a password hash: every token we accept is generated with
 * ≥ 200 bits of randomness (or, for an operator-supplied admin token, required to be long), so a
 * leaked digest cannot be reversed by guessing, and a fast unsalted hash keeps lookup a single
 * indexed equality query. An HMAC pepper would add a second secret whose loss invalidates every
 * token, without making such tokens any harder to recover.
 */
export function digestToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** Compares two hex digests in constant time (false when their lengths differ). */
export function digestsEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}

/** True when `token` has the shape of an agent token (prefix and allowed characters). */
export function looksLikeAgentToken(token: string): boolean {
  return token.startsWith(AGENT_TOKEN_PREFIX) && /^[A-Za-z0-9_-]{20,}$/.test(token.slice(AGENT_TOKEN_PREFIX.length));
}

/**
 * Redacts a token for logs: keeps only its prefix (`glagent-`, `glpat-`) so a log line says which
 * kind of credential was involved without ever carrying the secret.
 */
export function redactToken(token: string): string {
  const m = /^(gl[a-z]+-)/.exec(token);
  return m ? `${m[1]}[REDACTED]` : "[REDACTED]";
}
