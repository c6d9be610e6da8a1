/**
 * GitLab's wildcard patterns (CI environment scopes, `ci_access` `environments`, protected branch
 * names): the whole text must match, each `*` stands for any run of characters other than a line
 * break (Ruby's `.*` without the /m flag), and every other character stands for itself.
 *
 * Matched in time linear in the lengths of pattern and text, without regular expressions: the
 * patterns come from config files and API calls of ordinary users, and a backtracking matcher
 * turns a pattern like `(a+)+b*` or `a*a*a*a*a*b` into a denial of service.
 */
export function wildcardMatch(pattern: string, text: string): boolean {
  if (!pattern.includes("*")) return pattern === text;
  // `*` never spans a line break, so line breaks must pair up one to one: match line by line.
  const patternLines = pattern.split("\n");
  const textLines = text.split("\n");
  if (patternLines.length !== textLines.length) return false;
  return patternLines.every((line, i) => lineMatch(line, textLines[i]!));
}

/** `pattern` against `text`, neither containing a line break. */
function lineMatch(pattern: string, text: string): boolean {
  const parts = pattern.split("*");
  if (parts.length === 1) return pattern === text;
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (first.length + last.length > text.length || !text.startsWith(first) || !text.endsWith(last)) return false;
  // Each literal between two stars goes at its leftmost place after the previous one: any match
  // can be moved there, so this finds one whenever one exists.
  let from = first.length;
  const end = text.length - last.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i]!;
    if (part === "") continue;
    const at = indexOfLinear(text, part, from, end);
    if (at < 0) return false;
    from = at + part.length;
  }
  return true;
}

/**
 * The first index ≥ `from` where `needle` occurs in `haystack` and ends by `end`, or -1
 * (Knuth-Morris-Pratt: O(needle + scanned) whatever the input, unlike a naive search).
 */
function indexOfLinear(haystack: string, needle: string, from: number, end: number): number {
  const failure = new Int32Array(needle.length);
  for (let i = 1, k = 0; i < needle.length; i++) {
    while (k > 0 && needle.charCodeAt(i) !== needle.charCodeAt(k)) k = failure[k - 1]!;
    if (needle.charCodeAt(i) === needle.charCodeAt(k)) k++;
    failure[i] = k;
  }
  for (let i = from, k = 0; i < end; i++) {
    while (k > 0 && haystack.charCodeAt(i) !== needle.charCodeAt(k)) k = failure[k - 1]!;
    if (haystack.charCodeAt(i) === needle.charCodeAt(k)) k++;
    if (k === needle.length) return i - needle.length + 1;
  }
  return -1;
}
