import { createHash } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { KAS_JWT_AUDIENCE, KAS_JWT_ISSUER, signJwt, verifyJwt } from "../auth/jwt.js";
import { bearerToken } from "../auth/bearer.js";

/** Issuer of JWTs the platform (GitLab Rails) signs for KAS's internal API. */
export const PLATFORM_JWT_ISSUER = "gitlab";

/**
 * Verifies `authorization: Bearer <JWT>` (HS256, aud gitlab-kas) on internal API calls. The issuer is
 * not checked, as in GitLab's KAS: Rails signs with its own host name as `iss`.
 */
export function internalApiAuthorizer(secret: Uint8Array): (headers: Headers) => Promise<void> {
  return bearerJwtAuthorizer(secret, { api: "internal API" });
}

/**
 * Verifies the JWT another KAS replica sends to this one's private (kas-to-kas) API: HS256 with the
 * private API secret, iss and aud gitlab-kas, as GitLab's KAS.
 */
export function privateApiAuthorizer(secret: Uint8Array): (headers: Headers) => Promise<void> {
  return bearerJwtAuthorizer(secret, { api: "private API", issuer: KAS_JWT_ISSUER });
}

function bearerJwtAuthorizer(secret: Uint8Array, options: { api: string; issuer?: string }): (headers: Headers) => Promise<void> {
  // Callers reuse a JWT for many calls; verifying each one again (WebCrypto on the thread pool)
  // was the largest CPU cost per tunnelled call. A verified token is remembered, by digest, until
  // it expires.
  const verified = new Map<string, number>();
  return async (headers) => {
    const token = bearerToken(headers.get("authorization"));
    const now = Date.now();
    const key = token ? createHash("sha256").update(token).digest("base64") : "";
    const until = verified.get(key);
    if (until !== undefined && until > now) return;
    let claims: Record<string, unknown>;
    try {
      claims = await verifyJwt(secret, token, { audience: KAS_JWT_AUDIENCE, issuer: options.issuer });
    } catch {
      throw new ConnectError(`${options.api} JWT authentication invalid`, Code.Unauthenticated);
    }
    if (verified.size >= maxCachedTokens) {
      for (const [k, exp] of verified) if (exp <= now) verified.delete(k);
      if (verified.size >= maxCachedTokens) verified.clear();
    }
    if (typeof claims.exp === "number") verified.set(key, claims.exp * 1000);
  };
}

/** Verified JWTs remembered at once per API (callers re-sign every few seconds). */
const maxCachedTokens = 10_000;

/**
 * A connect interceptor for platform-side clients of KAS's internal API: signs a short-lived JWT
 * (re-signed every 10 s) and names the agent to route to.
 */
export function internalApiClientInterceptor(secret: Uint8Array, agentId: number | (() => number)): Interceptor {
  return routingInterceptor(secret, PLATFORM_JWT_ISSUER, agentId);
}

/**
 * The same for a KAS replica calling another's private API (an agent connected to that replica):
 * the JWT is signed with the private API secret as issuer gitlab-kas.
 */
export function privateApiClientInterceptor(secret: Uint8Array, agentId: number | (() => number)): Interceptor {
  return routingInterceptor(secret, KAS_JWT_ISSUER, agentId);
}

function routingInterceptor(secret: Uint8Array, issuer: string, agentId: number | (() => number)): Interceptor {
  let cached: { token: string; until: number } | undefined;
  return (next) => async (req) => {
    const now = Date.now();
    if (!cached || cached.until <= now) {
      cached = { token: await signJwt(secret, { issuer, audience: KAS_JWT_AUDIENCE }), until: now + 10_000 };
    }
    req.header.set("authorization", `Bearer ${cached.token}`);
    req.header.set("kas-hop-routing-agent-id", String(typeof agentId === "function" ? agentId() : agentId));
    return next(req);
  };
}
