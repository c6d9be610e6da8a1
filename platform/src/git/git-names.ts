/** Object ids: SHA-1 (40 hex digits) or SHA-256 (64). */
export const OID_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** The all-zero id git reports for "no object" (a created or deleted ref). */
export function isZeroOid(oid: string): boolean {
  return /^0+$/.test(oid);
}

/**
 * A ref name git accepts (`git check-ref-format --allow-onelevel`), and not starting with "-" so
 * it can never be read as an option: no control characters, space, `~ ^ : ? * [ \`, no "..",
 * "@{" or "//", no component starting with "." or ending in ".lock", not "@", not starting or
 * ending with "/", not ending with ".".
 */
export function isValidRefName(name: string): boolean {
  if (typeof name !== "string" || name.length === 0 || name.length > 1024) return false;
  if (name === "@" || name.startsWith("-")) return false;
  for (const ch of name) {
    const code = ch.codePointAt(0)!;
    if (code < 0x20 || code === 0x7f) return false;
  }
  if (/[ ~^:?*[\\]/.test(name) || name.includes("..") || name.includes("@{") || name.includes("//")) return false;
  if (name.startsWith("/") || name.endsWith("/") || name.endsWith(".")) return false;
  return name.split("/").every((part) => !part.startsWith(".") && !part.endsWith(".lock"));
}

/**
 * What callers may name a commit with: a branch or tag name (short or full, `main`,
 * `refs/heads/main`) or a full or abbreviated object id. Revision expressions (`main~1`, `@{u}`,
 * `:/text`) are refused.
 */
export function isValidRevision(revision: string): boolean {
  return isValidRefName(revision) || /^[0-9a-fA-F]{4,64}$/.test(revision);
}

/**
 * A file path inside a repository: relative, "/"-separated, without empty, "." or ".."
 * components, without NUL, at most 4096 bytes.
 */
export function isValidRepoPath(path: string): boolean {
  if (typeof path !== "string" || path.length === 0 || Buffer.byteLength(path) > 4096) return false;
  if (path.includes("\0")) return false;
  return path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

/**
 * A listing prefix: "" (everything) or the start of paths, e.g. ".gitlab/agents/" or
 * ".gitlab/agents/a". Its directory part (up to the last "/") must be a valid path.
 */
export function isValidPathPrefix(prefix: string): boolean {
  if (typeof prefix !== "string") return false;
  if (prefix === "") return true;
  if (prefix.includes("\0") || prefix.startsWith("/") || Buffer.byteLength(prefix) > 4096) return false;
  const slash = prefix.lastIndexOf("/");
  return slash < 0 || isValidRepoPath(prefix.slice(0, slash));
}
