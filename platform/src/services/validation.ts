import { invalid } from "./errors.js";

// GitLab's `Gitlab::Regex.cluster_agent_name_regex`, with its 63-character limit (a DNS label,
// since the name ends up in Kubernetes object names).
const AGENT_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const AGENT_NAME_MAX_LENGTH = 63;

/** Returns GitLab's full validation messages for an agent name (empty when valid). */
export function agentNameErrors(name: string): string[] {
  const errors: string[] = [];
  if (name.length === 0) errors.push("Name can't be blank");
  if (name.length > AGENT_NAME_MAX_LENGTH) errors.push(`Name is too long (maximum is ${AGENT_NAME_MAX_LENGTH} characters)`);
  if (name.length > 0 && !AGENT_NAME_RE.test(name)) {
    errors.push("Name can contain only lowercase letters, digits, and '-', but cannot start or end with '-'");
  }
  return errors;
}

// Namespace and project paths (GitLab's path_regex, simplified): letters, digits, '_', '-', '.';
// must start with a letter, digit or '_', must not end in '.', '.git' or '.atom'.
const PATH_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?$/;

export function pathErrors(path: string): string[] {
  if (path.length === 0) return ["can't be blank"];
  if (path.length > 255) return ["is too long (maximum is 255 characters)"];
  if (!PATH_RE.test(path) || /\.(git|atom)$/i.test(path) || path.includes("..")) {
    return [
      "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end in '.atom'",
    ];
  }
  return [];
}

// Project names: GitLab allows letters, digits, emoji, '_', '.', '-', '+', and spaces,
// starting with a letter, digit, emoji or '_'.
const PROJECT_NAME_RE = /^[\p{L}\p{N}\u{00A9}-\u{1f9ff}_][\p{L}\p{N}\p{Pd}+\u{00A9}-\u{1f9ff}_. ]*$/u;

export function projectNameErrors(name: string): string[] {
  if (name.trim().length === 0) return ["can't be blank"];
  if (name.length > 255) return ["is too long (maximum is 255 characters)"];
  if (!PROJECT_NAME_RE.test(name)) {
    return ["can contain only letters, digits, emoji, '_', '.', '+', dashes, or spaces. It must start with a letter, digit, emoji, or '_'."];
  }
  return [];
}

/** Derives a path from a name the way GitLab's UI does (lowercase, other characters → '-'). */
export function pathFromName(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, "-")
    .replace(/^[-.]+|[-.]+$/g, "")
    .slice(0, 255);
}

// GitLab usernames: like paths, and additionally no trailing '-' restriction only on '.'.
export function usernameErrors(username: string): string[] {
  return pathErrors(username).map((m) => `Username ${m}`);
}

export const VISIBILITIES = ["private", "internal", "public"] as const;
export type Visibility = (typeof VISIBILITIES)[number];

export function parseVisibility(value: unknown, fallback: Visibility): Visibility {
  if (value === undefined || value === null || value === "") return fallback;
  if (typeof value === "string" && (VISIBILITIES as readonly string[]).includes(value)) return value as Visibility;
  throw invalid("visibility does not have a valid value");
}

/** Requires a non-empty string of at most `max` characters. */
export function requireString(value: unknown, field: string, max = 255): string {
  if (typeof value !== "string" || value.trim() === "") throw invalid(`${field} is missing`);
  if (value.length > max) throw invalid(`${field} is too long (maximum is ${max} characters)`);
  return value;
}

export function optionalString(value: unknown, field: string, max = 1024): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalid(`${field} is invalid`);
  if (value.length > max) throw invalid(`${field} is too long (maximum is ${max} characters)`);
  return value;
}
