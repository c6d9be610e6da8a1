import { randomBase62 } from "@kasbridge/sdk/auth";

/** Prefix of CI job tokens, as GitLab's (`Ci::Build::TOKEN_PREFIX`). */
export const CI_JOB_TOKEN_PREFIX = "glcbt-";
/** Random characters after the prefix (≈238 bits of entropy). */
export const CI_JOB_TOKEN_RANDOM_CHARS = 40;
/** Longest job token we look up; anything longer is refused without a query. */
export const CI_JOB_TOKEN_MAX_LENGTH = 1024;

/** A new CI job token: `glcbt-` + 40 base62 characters. Stored only as its digest. */
export function generateCiJobToken(): string {
  return CI_JOB_TOKEN_PREFIX + randomBase62(CI_JOB_TOKEN_RANDOM_CHARS);
}
