/**
 * Paths of HTTP requests carried over gRPC, checked the same way at both ends: Kubernetes API
 * proxy requests (KAS and agent), and agent modules' requests to the platform (gitlab_access).
 *
 * The wire carries the decoded path (`url_path`, Go's `URL.Path`, as GitLab's KAS sends it), in
 * which an encoded slash inside a segment (`a%2Fb`) cannot be told from a separator. When the
 * client's path has one, KAS also sends the escaped path in the ESCAPED_PATH_HEADER request header;
 * our agent uses it (after checking it decodes to `url_path`) so `%2F` reaches the API server still
 * encoded, and never forwards the header. GitLab's agentk ignores it, as it ignores any header it
 * does not know (it reaches the API server, which ignores it too).
 *
 * Dot segments are refused after decoding: `..%2F` or `%2E%2E` would otherwise be resolved after
 * the proxy's checks (by the agent's URL handling or the API server's path cleaning).
 */

/** kasbridge extension: the escaped form of `url_path` when decoding lost an encoded slash. */
export const ESCAPED_PATH_HEADER = "X-Kasbridge-Escaped-Path";

/** Why a path was refused; the message is safe to show to the client. */
export class RequestPathError extends Error {
  override readonly name = "RequestPathError";
}

export interface CheckedPath {
  /** The decoded path (what `url_path` carries). */
  decoded: string;
  /** The canonical escaped form, only when a segment holds a `/` (decoding alone would lose it). */
  escaped?: string;
}

/**
 * Checks a raw (still percent-encoded) absolute path: valid escapes, no `.` or `..` segment once
 * decoded (an encoded slash splits a segment for this check). Throws RequestPathError.
 */
export function checkRawPath(rawPath: string): CheckedPath {
  if (!rawPath.startsWith("/")) throw new RequestPathError("the request path must start with /");
  const segments = rawPath.split("/");
  const decoded: string[] = [];
  let slashInSegment = false;
  for (const raw of segments) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      throw new RequestPathError("the request path has an invalid percent-encoding");
    }
    if (segment.includes("/")) slashInSegment = true;
    decoded.push(segment);
  }
  const path = decoded.join("/");
  assertNoDotSegments(path);
  return slashInSegment ? { decoded: path, escaped: decoded.map(encodeSegment).join("/") } : { decoded: path };
}

/** Throws RequestPathError when a `/`-separated segment of the decoded `path` is `.` or `..`. */
export function assertNoDotSegments(path: string): void {
  for (const segment of path.split("/")) {
    if (segment === "." || segment === "..") throw new RequestPathError('the request path must not have "." or ".." segments');
  }
}

/**
 * The path to send to the API server for `url_path` and, if KAS sent one, its escaped form
 * (which must decode to `url_path`: it may only say where slashes were encoded). Throws
 * RequestPathError.
 */
export function pathForApiServer(urlPath: string, escaped: string | undefined): string {
  const decoded = urlPath.startsWith("/") ? urlPath : `/${urlPath}`;
  assertNoDotSegments(decoded);
  if (escaped === undefined) return encodePath(decoded);
  let checked: CheckedPath;
  try {
    checked = checkRawPath(escaped);
  } catch (e) {
    throw new RequestPathError(`${ESCAPED_PATH_HEADER}: ${(e as Error).message}`);
  }
  if (checked.decoded !== decoded) throw new RequestPathError(`${ESCAPED_PATH_HEADER} does not match the request path`);
  return checked.escaped ?? encodePath(decoded);
}

/** Percent-encodes each segment of a decoded path. */
export function encodePath(path: string): string {
  // The usual Kubernetes path needs no escaping at all.
  if (/^[A-Za-z0-9\-._~/:@,=+]*$/.test(path)) return path;
  return path.split("/").map(encodeSegment).join("/");
}

/** One segment, escaped as little as RFC 3986 `pchar` needs (`:@,=+` stay, as Go's EscapedPath leaves them). */
function encodeSegment(segment: string): string {
  return encodeURIComponent(segment).replace(/%3A/gi, ":").replace(/%40/g, "@").replace(/%2C/gi, ",").replace(/%3D/gi, "=").replace(/%2B/gi, "+");
}

/**
 * The raw path and query of an HTTP request target (origin form `/p?q`, or absolute form
 * `http://host/p?q` as HTTP/1.1 allows). Undefined for anything else (`*`, authority form).
 */
export function splitRequestTarget(target: string): { rawPath: string; rawQuery: string } | undefined {
  let rest = target;
  if (!rest.startsWith("/")) {
    const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(rest);
    if (!m) return undefined;
    rest = rest.slice(m[0].length);
    if (rest === "" || rest.startsWith("?")) rest = `/${rest}`;
    if (!rest.startsWith("/")) return undefined;
  }
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  return q < 0 ? { rawPath: rest, rawQuery: "" } : { rawPath: rest.slice(0, q), rawQuery: rest.slice(q + 1) };
}
