import { errors as joseErrors, jwtVerify, SignJWT } from "jose";

/** Header that carries KAS's JWT on every call to the platform's internal API. */
export const KAS_API_REQUEST_HEADER = "Gitlab-Kas-Api-Request";
/** Issuer of JWTs KAS signs (for the platform and for other KAS replicas). */
export const KAS_JWT_ISSUER = "gitlab-kas";
/** Audience of the JWT KAS sends to the platform (GitLab's `Gitlab::Kas::JWT_AUDIENCE`). */
export const PLATFORM_JWT_AUDIENCE = "gitlab";
/** Audience of JWTs for KAS's own APIs (internal API from the platform, kas-to-kas API). */
export const KAS_JWT_AUDIENCE = "gitlab-kas";

/** Lifetime of a KAS API request JWT, as GitLab KAS uses. */
export const DEFAULT_JWT_VALID_FOR_MS = 30_000;
/** How far `nbf` is set in the past, so a verifier whose clock runs slightly behind still accepts. */
export const DEFAULT_JWT_NOT_BEFORE_SKEW_MS = 5_000;

const ALGORITHM = "HS256";

export interface SignJwtOptions {
  issuer: string;
  audience: string;
  /** Lifetime from now. Default 30 000 ms. */
  validForMs?: number;
  /** `nbf` = now minus this. Default 5 000 ms. */
  notBeforeSkewMs?: number;
  /** Clock, for tests. Default Date.now. */
  nowMs?: number;
}

/** Signs an HS256 JWT with iss, aud, iat, nbf and exp set. */
export async function signJwt(secret: Uint8Array, options: SignJwtOptions): Promise<string> {
  const nowS = Math.floor((options.nowMs ?? Date.now()) / 1000);
  const validForS = Math.ceil((options.validForMs ?? DEFAULT_JWT_VALID_FOR_MS) / 1000);
  const skewS = Math.ceil((options.notBeforeSkewMs ?? DEFAULT_JWT_NOT_BEFORE_SKEW_MS) / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: ALGORITHM, typ: "JWT" })
    .setIssuer(options.issuer)
    .setAudience(options.audience)
    .setIssuedAt(nowS)
    .setNotBefore(nowS - skewS)
    .setExpirationTime(nowS + validForS)
    .sign(secret);
}

export interface VerifyJwtOptions {
  /** Required issuer; omit to accept any (GitLab Rails signs with its own host name). */
  issuer?: string;
  audience: string;
  /** Clock skew tolerated on exp/nbf. Default 5 000 ms. */
  clockToleranceMs?: number;
  /** Clock, for tests. Default Date.now. */
  nowMs?: number;
}

/** Why a JWT was refused; messages never include the token. */
export class JwtVerificationError extends Error {
  override readonly name = "JwtVerificationError";
}

/**
 * Verifies an HS256 JWT: signature, issuer, audience, and exp present and not passed. Throws
 * JwtVerificationError (never another error type) so callers map every failure to one 401.
 */
export async function verifyJwt(
  secret: Uint8Array,
  token: string | undefined,
  options: VerifyJwtOptions,
): Promise<Record<string, unknown>> {
  if (!token) throw new JwtVerificationError("missing JWT");
  try {
    const { payload } = await jwtVerify(token, secret, {
      algorithms: [ALGORITHM],
      issuer: options.issuer,
      audience: options.audience,
      requiredClaims: ["exp"],
      clockTolerance: Math.ceil((options.clockToleranceMs ?? DEFAULT_JWT_NOT_BEFORE_SKEW_MS) / 1000),
      currentDate: options.nowMs === undefined ? undefined : new Date(options.nowMs),
    });
    return payload;
  } catch (err) {
    if (err instanceof joseErrors.JOSEError) {
      throw new JwtVerificationError(`invalid JWT: ${err.code}`, { cause: err });
    }
    throw new JwtVerificationError("invalid JWT", { cause: err });
  }
}

/** The value of `Gitlab-Kas-Api-Request` for one call from KAS to the platform. */
export function signKasApiRequestJwt(secret: Uint8Array, nowMs?: number): Promise<string> {
  return signJwt(secret, { issuer: KAS_JWT_ISSUER, audience: PLATFORM_JWT_AUDIENCE, nowMs });
}

/** Verifies a `Gitlab-Kas-Api-Request` header value on the platform side. */
export async function verifyKasApiRequestJwt(
  secret: Uint8Array,
  token: string | undefined,
  nowMs?: number,
): Promise<void> {
  await verifyJwt(secret, token, { issuer: KAS_JWT_ISSUER, audience: PLATFORM_JWT_AUDIENCE, nowMs });
}
