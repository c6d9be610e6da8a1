import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { KAS_JWT_AUDIENCE, signJwt, verifyJwt } from "../auth/jwt.js";

/** Issuer of JWTs the platform (GitLab Rails) signs for KAS's internal API. */
export const PLATFORM_JWT_ISSUER = "gitlab";

/**
 * Verifies `authorization: Bearer <JWT>` (HS256, aud gitlab-kas) on internal API calls. The issuer is
 * not checked, as in GitLab's KAS: Rails signs with its own host name as `iss`.
 */
export function internalApiAuthorizer(secret: Uint8Array): (headers: Headers) => Promise<void> {
  return async (headers) => {
    const match = /^Bearer\s+(\S+)$/i.exec(headers.get("authorization") ?? "");
    try {
      await verifyJwt(secret, match?.[1], { audience: KAS_JWT_AUDIENCE });
    } catch {
      throw new ConnectError("internal API JWT authentication invalid", Code.Unauthenticated);
    }
  };
}

/**
 * A connect interceptor for platform-side clients of KAS's internal API: signs a short-lived JWT
 * (re-signed every 10 s) and names the agent to route to.
 */
export function internalApiClientInterceptor(secret: Uint8Array, agentId: number | (() => number)): Interceptor {
  let cached: { token: string; until: number } | undefined;
  return (next) => async (req) => {
    const now = Date.now();
    if (!cached || cached.until <= now) {
      cached = { token: await signJwt(secret, { issuer: PLATFORM_JWT_ISSUER, audience: KAS_JWT_AUDIENCE }), until: now + 10_000 };
    }
    req.header.set("authorization", `Bearer ${cached.token}`);
    req.header.set("kas-hop-routing-agent-id", String(typeof agentId === "function" ? agentId() : agentId));
    return next(req);
  };
}
