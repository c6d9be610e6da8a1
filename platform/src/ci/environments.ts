/**
 * CI environments as GitLab models them: a name per project, a slug derived from it
 * (`Gitlab::Slug::Environment`), a deployment tier guessed from the name unless given
 * (`Environment#guess_tier`), and the `environments` patterns of a ci_access entry
 * (`Gitlab::Ci::EnvironmentMatcher`).
 */
import { createHash } from "node:crypto";
import { wildcardMatch } from "../util/wildcard.js";

/** GitLab's deployment tiers (`Environment.tiers`). */
export const ENVIRONMENT_TIERS = ["production", "staging", "testing", "development", "other"] as const;
export type EnvironmentTier = (typeof ENVIRONMENT_TIERS)[number];

export function isEnvironmentTier(value: unknown): value is EnvironmentTier {
  return typeof value === "string" && (ENVIRONMENT_TIERS as readonly string[]).includes(value);
}

/** Longest environment name GitLab accepts. */
export const ENVIRONMENT_NAME_MAX_LENGTH = 255;

// Gitlab::Regex.environment_name_regex: letters, digits, '-', '_', '/', '$', '{', '}', '.' and
// spaces, not starting or ending with '/'.
const NAME_RE = /^[a-zA-Z0-9_${}. -](?:[a-zA-Z0-9_/${}. -]*[a-zA-Z0-9_${}. -])?$/;

/** GitLab's message for a name that does not match (environment_name_regex_message). */
export const ENVIRONMENT_NAME_MESSAGE =
  "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'";

/** Problems with `name` as an environment name; empty when valid. */
export function environmentNameErrors(name: string): string[] {
  if (name.length === 0) return ["can't be blank"];
  if (name.length > ENVIRONMENT_NAME_MAX_LENGTH) return [`is too long (maximum is ${ENVIRONMENT_NAME_MAX_LENGTH} characters)`];
  return NAME_RE.test(name) ? [] : [ENVIRONMENT_NAME_MESSAGE];
}

/**
 * The environment's slug, as `Gitlab::Slug::Environment#generate`: lowercase letters, digits and
 * '-', starting with a letter, at most 24 characters, not ending in '-'. A name that had to be
 * changed (or is too long) is cut to 17 characters and gets a suffix of 6 base-36 digits from the
 * SHA-256 of the name, so different names keep different slugs.
 */
export function environmentSlug(name: string): string {
  let slug = name.toLowerCase().replace(/[^a-z0-9]/g, "-");
  if (!/^[a-z]/.test(slug)) slug = `env-${slug}`;
  slug = slug.replace(/-+/g, "-");
  if (slug.length > 24 || slug !== name) {
    slug = slug.slice(0, 17);
    if (!slug.endsWith("-")) slug += "-";
    return slug + slugSuffix(name);
  }
  return slug.endsWith("-") ? slug.slice(0, -1) : slug;
}

function slugSuffix(name: string): string {
  return slugSuffixFromDigest(createHash("sha256").update(name, "utf8").digest("hex"));
}

/** Ruby's `hexdigest.to_i(16).to_s(36).last(6)`. */
export function slugSuffixFromDigest(hex: string): string {
  return BigInt(`0x${hex}`).toString(36).slice(-6);
}

/** The tier GitLab guesses from an environment's name when none is given (`Environment#guess_tier`). */
export function guessEnvironmentTier(name: string): EnvironmentTier {
  if (/(dev|review|trunk)/i.test(name)) return "development";
  if (/(test|tst|int|ac(ce|)pt|qa|qc|control|quality)/i.test(name)) return "testing";
  if (/(st(a|)g|mod(e|)l|pre|demo|non)/i.test(name)) return "staging";
  if (/(pr(o|)d|live)/i.test(name)) return "production";
  return "other";
}

/**
 * Whether a ci_access `environments` pattern matches the job's environment name, as
 * `Gitlab::Ci::EnvironmentMatcher`: an equal string, or, for a pattern with `*`, the whole name
 * with each `*` standing for any run of characters and everything else literal (`review/*` does
 * not match `old-review/x`, `prod.*` does not match `prodX1`). A blank pattern matches nothing.
 * Linear time: a pattern pushed by any project member must not be able to stall the platform.
 */
export function environmentPatternMatches(pattern: string, environment: string): boolean {
  if (pattern.trim() === "") return false; // Ruby's `blank?`
  return wildcardMatch(pattern, environment);
}

/**
 * GitLab's `CiAccess::FilterService` environment step: an authorization without `environments`
 * always applies; one with `environments` only when the job has an environment matching one of
 * them (a job without environment gets none of those).
 */
export function authorizationAppliesToEnvironment(environments: readonly string[] | undefined, environment: string | null): boolean {
  if (!Array.isArray(environments) || environments.length === 0) return true;
  if (environment === null) return false;
  return environments.some((p) => typeof p === "string" && environmentPatternMatches(p, environment));
}
