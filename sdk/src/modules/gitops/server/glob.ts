/**
 * Globs of GitLab's `paths[].glob` (doublestar semantics): `*` and `?` within one path segment,
 * `**` as a whole segment for any number of segments (zero included: `**\/*.yaml` matches
 * `a.yaml`), `[a-z]` / `[!a-z]` classes, `{yaml,yml}` alternatives, `\` escapes.
 */

/** A glob's matcher; throws GlobSyntaxError for a malformed glob. */
export function globMatcher(glob: string): (path: string) => boolean {
  const re = new RegExp(`^${globToRegExpSource(glob)}$`, "u");
  return (path) => re.test(path);
}

export class GlobSyntaxError extends Error {
  override readonly name = "GlobSyntaxError";
}

function globToRegExpSource(glob: string): string {
  let out = "";
  let braces = 0;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "\\") {
      if (i + 1 >= glob.length) throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} ends with an escape`);
      out += escapeRegExp(glob[++i]!);
    } else if (c === "*") {
      const double = glob[i + 1] === "*";
      const segmentStart = i === 0 || glob[i - 1] === "/";
      const segmentEnd = i + 2 >= glob.length || glob[i + 2] === "/";
      if (double && segmentStart && segmentEnd) {
        if (i + 2 < glob.length) {
          out += "(?:[^/]*(?:/[^/]*)*/)?";
          i += 2; // the "**" and its "/"
        } else {
          out += ".*";
          i += 1;
        }
      } else {
        out += "[^/]*";
        if (double) i++;
      }
    } else if (c === "?") {
      out += "[^/]";
    } else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} has an unclosed [`);
      let body = glob.slice(i + 1, end);
      const negate = body.startsWith("!") || body.startsWith("^");
      if (negate) body = body.slice(1);
      out += `[${negate ? "^/" : ""}${body.replace(/[\\\]^]/g, (m) => `\\${m}`)}]`;
      i = end;
    } else if (c === "{") {
      braces++;
      out += "(?:";
    } else if (c === "}" && braces > 0) {
      braces--;
      out += ")";
    } else if (c === "," && braces > 0) {
      out += "|";
    } else {
      out += escapeRegExp(c);
    }
  }
  if (braces > 0) throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} has an unclosed {`);
  return out;
}

function escapeRegExp(c: string): string {
  return /[.*+?^${}()|[\]\\/-]/.test(c) ? `\\${c}` : c;
}

/** Whether a path lies in a hidden directory (one whose name starts with "."): GitOps skips those. */
export function inHiddenDirectory(path: string): boolean {
  const parts = path.split("/");
  return parts.slice(0, -1).some((p) => p.startsWith("."));
}
