/**
 * Globs of GitLab's `paths[].glob` (doublestar semantics): `*` and `?` within one path segment,
 * `**` as a whole segment for any number of segments (zero included: `**\/*.yaml` matches
 * `a.yaml`), `[a-z]` / `[!a-z]` classes, `{yaml,yml}` alternatives, `\` escapes.
 *
 * Globs come from users' config files and paths from their repositories, so matching must not
 * backtrack: alternatives are expanded into separate globs (at most MAX_ALTERNATIVES), segments
 * are matched by a table over (glob segment, path segment), and a segment's stars by the classic
 * two-pointer wildcard match. Time is bounded by lengths multiplied, never exponential.
 */

/** Most globs one glob may expand into through `{…}` alternatives. */
export const MAX_ALTERNATIVES = 64;

export class GlobSyntaxError extends Error {
  override readonly name = "GlobSyntaxError";
}

/** One character test of a segment pattern. */
type Atom = { kind: "char"; char: string } | { kind: "any" } | { kind: "class"; negate: boolean; ranges: Array<[string, string]> } | { kind: "star" };
/** A glob segment: `**`, or atoms matched against one path segment. */
type Segment = "**" | Atom[];

/** A glob's matcher; throws GlobSyntaxError for a malformed glob. */
export function globMatcher(glob: string): (path: string) => boolean {
  const alternatives = expandBraces(glob).map(parseSegments);
  return (path) => {
    const parts = path.split("/");
    return alternatives.some((segments) => matchSegments(segments, parts));
  };
}

/** Expands `{a,b}` alternatives (nested ones too) into plain globs. */
function expandBraces(glob: string): string[] {
  let open = -1;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "\\") i++;
    else if (c === "[") i = classEnd(glob, i);
    else if (c === "{") {
      open = i;
      break;
    }
  }
  if (open < 0) return [glob];
  // The matching "}" and the top-level commas between.
  const commas: number[] = [];
  let depth = 0;
  let close = -1;
  for (let i = open + 1; i < glob.length && close < 0; i++) {
    const c = glob[i]!;
    if (c === "\\") i++;
    else if (c === "[") i = classEnd(glob, i);
    else if (c === "{") depth++;
    else if (c === "}") {
      if (depth === 0) close = i;
      else depth--;
    } else if (c === "," && depth === 0) commas.push(i);
  }
  if (close < 0) throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} has an unclosed {`);
  const bounds = [open, ...commas, close];
  const out: string[] = [];
  for (let k = 0; k + 1 < bounds.length; k++) {
    const variant = glob.slice(0, open) + glob.slice(bounds[k]! + 1, bounds[k + 1]) + glob.slice(close + 1);
    out.push(...expandBraces(variant));
    if (out.length > MAX_ALTERNATIVES) throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} has more than ${MAX_ALTERNATIVES} alternatives`);
  }
  return out;
}

/** Index of the `]` closing the class opened at `i` (a `]` right after `[` or `[!` is literal). */
function classEnd(glob: string, i: number): number {
  let j = i + 1;
  if (glob[j] === "!" || glob[j] === "^") j++;
  if (glob[j] === "]") j++;
  for (; j < glob.length; j++) {
    if (glob[j] === "\\") j++;
    else if (glob[j] === "]") return j;
  }
  throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} has an unclosed [`);
}

function parseSegments(glob: string): Segment[] {
  const segments: Segment[] = [];
  for (const raw of splitSegments(glob)) {
    if (raw === "**") {
      // Several `**` in a row mean what one means.
      if (segments.at(-1) !== "**") segments.push("**");
      continue;
    }
    segments.push(parseAtoms(raw, glob));
  }
  return segments;
}

/** Splits at unescaped "/" outside classes. */
function splitSegments(glob: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "\\") i++;
    else if (c === "[") i = classEnd(glob, i);
    else if (c === "/") {
      out.push(glob.slice(start, i));
      start = i + 1;
    }
  }
  out.push(glob.slice(start));
  return out;
}

function parseAtoms(segment: string, glob: string): Atom[] {
  const atoms: Atom[] = [];
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === "\\") {
      if (i + 1 >= segment.length) throw new GlobSyntaxError(`glob ${JSON.stringify(glob)} ends with an escape`);
      atoms.push({ kind: "char", char: segment[++i]! });
    } else if (c === "*") {
      if (atoms.at(-1)?.kind !== "star") atoms.push({ kind: "star" });
    } else if (c === "?") {
      atoms.push({ kind: "any" });
    } else if (c === "[") {
      const end = classEnd(segment, i);
      let j = i + 1;
      const negate = segment[j] === "!" || segment[j] === "^";
      if (negate) j++;
      const ranges: Array<[string, string]> = [];
      while (j < end) {
        let lo = segment[j]!;
        if (lo === "\\") lo = segment[++j]!;
        j++;
        let hi = lo;
        if (segment[j] === "-" && j + 1 < end) {
          hi = segment[j + 1] === "\\" ? segment[(j += 2)]! : segment[++j]!;
          j++;
        }
        ranges.push([lo, hi]);
      }
      atoms.push({ kind: "class", negate, ranges });
      i = end;
    } else {
      atoms.push({ kind: "char", char: c });
    }
  }
  return atoms;
}

/** Whether the glob segments match the path segments (a table, so `**` never backtracks). */
function matchSegments(segments: Segment[], parts: string[]): boolean {
  // reach[j]: glob segments so far can consume exactly parts[0..j).
  let reach = new Array<boolean>(parts.length + 1).fill(false);
  reach[0] = true;
  for (const segment of segments) {
    const next = new Array<boolean>(parts.length + 1).fill(false);
    if (segment === "**") {
      let any = false;
      for (let j = 0; j <= parts.length; j++) {
        any ||= reach[j]!;
        next[j] = any;
      }
    } else {
      for (let j = 0; j < parts.length; j++) if (reach[j] && matchAtoms(segment, parts[j]!)) next[j + 1] = true;
    }
    reach = next;
  }
  return reach[parts.length]!;
}

function atomMatches(atom: Exclude<Atom, { kind: "star" }>, c: string): boolean {
  if (atom.kind === "char") return atom.char === c;
  if (atom.kind === "any") return true;
  const inRange = atom.ranges.some(([lo, hi]) => c >= lo && c <= hi);
  return inRange !== atom.negate;
}

/** One segment: the two-pointer wildcard match (back to the last star only), O(atoms × text). */
function matchAtoms(atoms: Atom[], text: string): boolean {
  let a = 0;
  let t = 0;
  let star = -1;
  let starText = 0;
  while (t < text.length) {
    const atom = atoms[a];
    if (atom && atom.kind === "star") {
      star = a++;
      starText = t;
    } else if (atom && atomMatches(atom, text[t]!)) {
      a++;
      t++;
    } else if (star >= 0) {
      a = star + 1;
      t = ++starText;
    } else {
      return false;
    }
  }
  while (atoms[a]?.kind === "star") a++;
  return a === atoms.length;
}

/** Whether a path lies in a hidden directory (one whose name starts with "."): GitOps skips those. */
export function inHiddenDirectory(path: string): boolean {
  const parts = path.split("/");
  return parts.slice(0, -1).some((p) => p.startsWith("."));
}
