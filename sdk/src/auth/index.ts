// @kasbridge/sdk/auth: agent and personal access tokens, the JWTs between KAS and the platform, secret files.
export { bearerToken } from "./bearer.js";
export {
  AGENT_TOKEN_PREFIX,
  AGENT_TOKEN_RANDOM_CHARS,
  PERSONAL_ACCESS_TOKEN_PREFIX,
  PERSONAL_ACCESS_TOKEN_RANDOM_CHARS,
  digestToken,
  digestsEqual,
  generateAgentToken,
  generatePersonalAccessToken,
  looksLikeAgentToken,
  randomBase62,
  redactToken,
} from "./tokens.js";
export {
  DEFAULT_JWT_NOT_BEFORE_SKEW_MS,
  DEFAULT_JWT_VALID_FOR_MS,
  JwtVerificationError,
  KAS_API_REQUEST_HEADER,
  KAS_JWT_AUDIENCE,
  KAS_JWT_ISSUER,
  PLATFORM_JWT_AUDIENCE,
  signJwt,
  signKasApiRequestJwt,
  verifyJwt,
  verifyKasApiRequestJwt,
} from "./jwt.js";
export type { SignJwtOptions, VerifyJwtOptions } from "./jwt.js";
export { MIN_SECRET_BYTES, SecretFileError, decodeSecret, ensureSecretFile, loadSecretFile } from "./secret-file.js";
