/**
 * HTTP carried over gRPC (`grpctool.HttpRequest` / `HttpResponse` frames): header maps and the
 * hop-by-hop rules of the modules that carry HTTP (kubernetes_api through the tunnel, gitlab_access
 * from agents to the platform). Header names travel in Go's
 * canonical form (`Content-Type`), as GitLab's KAS and agentk put them in an `http.Header`.
 */
import { create } from "@bufbuild/protobuf";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { ValuesSchema, type Values } from "../gen/gitlab/agent/prototool/prototool_pb.js";
import type { MultiMap } from "../platform-client/platform-client.js";
import { isValidHeader } from "../util/metadata.js";

/** Hop-by-hop headers (RFC 9110 7.6.1) plus HTTP/2's connection-specific ones; never forwarded. */
const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "host",
]);

const canonicalNames = new Map<string, string>();

/** Go's http.CanonicalHeaderKey for the usual header characters (memoized: the same few dozen names recur on every request). */
export function canonicalHeaderName(name: string): string {
  let canonical = canonicalNames.get(name);
  if (canonical === undefined) {
    canonical = name.toLowerCase().replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
    // Bounded: header names are client-chosen; past the bound names are just computed each time.
    if (canonicalNames.size < 1000) canonicalNames.set(name, canonical);
  }
  return canonical;
}

/** True for a request asking to switch protocols (SPDY/3.1 or WebSocket for exec, attach, port-forward). */
export function isUpgradeRequest(headers: IncomingHttpHeaders): boolean {
  const connection = String(headers.connection ?? "").toLowerCase();
  return headers.upgrade !== undefined && connection.split(/\s*,\s*/).includes("upgrade");
}

/**
 * The header names a `Connection` header lists (RFC 9110 7.6.1: they apply to this hop only),
 * lowercase. `value` is every Connection field line the message had.
 */
export function connectionOptions(value: string | readonly string[] | undefined): Set<string> {
  const names = new Set<string>();
  if (value === undefined) return names;
  for (const line of typeof value === "string" ? [value] : value) {
    for (const token of line.split(",")) {
      const name = token.trim().toLowerCase();
      if (name !== "") names.add(name);
    }
  }
  return names;
}

/** One of the standard hop-by-hop headers (lowercase name). */
export function isHopByHop(lowerName: string): boolean {
  return hopByHop.has(lowerName);
}

/** Whether a header may travel on: not hop-by-hop, not named by Connection (Upgrade kept for an upgrade). */
function isEndToEnd(lowerName: string, listed: Set<string>, keepUpgrade: boolean | undefined): boolean {
  if (keepUpgrade && lowerName === "upgrade") return true;
  return !hopByHop.has(lowerName) && !listed.has(lowerName);
}

/**
 * Node headers -> tunnel header map, without hop-by-hop headers (the standard set and those the
 * `Connection` header names) and those `drop` names (lowercase). With `keepUpgrade`,
 * `Connection: Upgrade` and `Upgrade` are kept (the agent must send them on).
 */
export function nodeHeadersToMap(
  headers: IncomingHttpHeaders,
  options: { drop?: (lowerName: string) => boolean; keepUpgrade?: boolean } = {},
): { [key: string]: Values } {
  const out: { [key: string]: Values } = {};
  const listed = connectionOptions(headers.connection);
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":")) continue;
    const lower = name.toLowerCase();
    if (options.drop?.(lower)) continue;
    if (!isEndToEnd(lower, listed, options.keepUpgrade)) continue;
    const key = canonicalHeaderName(lower);
    const values = Array.isArray(value) ? value : [value];
    const existing = out[key];
    if (existing) existing.value.push(...values);
    else out[key] = create(ValuesSchema, { value: [...values] });
  }
  if (options.keepUpgrade && headers.upgrade !== undefined) out.Connection = create(ValuesSchema, { value: ["Upgrade"] });
  return out;
}

/**
 * Tunnel header map -> Node outgoing headers, without hop-by-hop headers (the standard set and
 * those the map's `Connection` names). `forHttp2` drops the connection-specific headers HTTP/2
 * forbids; `keepUpgrade` keeps Connection/Upgrade (101 answers and upgrade requests), Connection
 * then only as `Upgrade`. A header whose name is not an HTTP token or whose value holds CR, LF, NUL
 * or another control character (Node's own checks) is left out and reported to `onInvalid`: the
 * map comes from the other side of the tunnel and must not be able to add lines to a message.
 */
export function mapToNodeHeaders(
  map: { [key: string]: Values },
  options: { forHttp2?: boolean; keepUpgrade?: boolean; onInvalid?: (name: string) => void } = {},
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  let listed: Set<string> | undefined;
  for (const [name, values] of Object.entries(map)) {
    if (name.toLowerCase() === "connection") listed = connectionOptions([...(listed ?? []), ...values.value]);
  }
  listed ??= new Set();
  let upgradeConnection = false;
  for (const [name, values] of Object.entries(map)) {
    const lower = name.toLowerCase();
    if (options.keepUpgrade && lower === "connection") {
      upgradeConnection = !options.forHttp2 && listed.has("upgrade");
      continue;
    }
    if (!isEndToEnd(lower, listed, options.keepUpgrade)) continue;
    if (options.forHttp2 && lower === "upgrade") continue;
    if (values.value.length === 0) continue;
    if (!isValidHeader(name, values.value)) {
      options.onInvalid?.(name);
      continue;
    }
    out[name] = values.value.length === 1 ? values.value[0] : [...values.value];
  }
  if (upgradeConnection) out.Connection = "Upgrade";
  return out;
}

/** A status code Node can send for a final answer (200-599; 1xx, and 101 in particular, are not final). */
export function isFinalStatusCode(code: number): boolean {
  return Number.isInteger(code) && code >= 200 && code <= 599;
}

/** A reason phrase without the characters that could end the status line (RFC 9112: HTAB, SP, VCHAR, obs-text). */
export function safeReasonPhrase(reason: string): string {
  return reason.replace(/[^\t\x20-\x7e\x80-\xff]/g, "");
}

/** URLSearchParams -> tunnel query map (repeated keys keep their order). */
export function queryToMap(search: URLSearchParams): { [key: string]: Values } {
  const out: { [key: string]: Values } = {};
  for (const [k, v] of search) {
    const existing = out[k];
    if (existing) existing.value.push(v);
    else out[k] = create(ValuesSchema, { value: [v] });
  }
  return out;
}

/** Tunnel query map -> "?a=1&b=2" ("" when empty). */
export function mapToQueryString(map: { [key: string]: Values }): string {
  const search = new URLSearchParams();
  for (const [k, values] of Object.entries(map)) for (const v of values.value) search.append(k, v);
  const s = search.toString();
  return s === "" ? "" : `?${s}`;
}

/**
 * Raw HTTP/1.1 response head for a socket we answer ourselves (upgrades and their refusals).
 * Headers Node would refuse to send are left out (callers validate first and report them).
 */
export function rawResponseHead(statusCode: number, statusMessage: string, headers: OutgoingHttpHeaders): string {
  let head = `HTTP/1.1 ${statusCode} ${safeReasonPhrase(statusMessage)}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const values = (Array.isArray(value) ? value : [value]).map(String);
    if (!isValidHeader(name, values)) continue;
    for (const v of values) head += `${name}: ${v}\r\n`;
  }
  return `${head}\r\n`;
}

/** Tunnel value map (headers or query) -> name with its values. */
export function valuesToMultiMap(map: { [key: string]: Values }): MultiMap {
  const out: MultiMap = {};
  for (const [name, values] of Object.entries(map)) out[name] = [...values.value];
  return out;
}

/**
 * Tunnel header map -> headers to send on, without hop-by-hop headers, those `drop` names
 * (lowercase) and invalid entries (reported to `onInvalid`, as {@link mapToNodeHeaders}).
 */
export function mapToMultiMap(
  map: { [key: string]: Values },
  options: { drop?: (lowerName: string) => boolean; onInvalid?: (name: string) => void } = {},
): MultiMap {
  const out: MultiMap = {};
  for (const [name, value] of Object.entries(mapToNodeHeaders(map, { onInvalid: options.onInvalid }))) {
    if (value === undefined || options.drop?.(name.toLowerCase())) continue;
    out[name] = Array.isArray(value) ? value.map(String) : [String(value)];
  }
  return out;
}

/** Headers -> tunnel header map (Go's canonical names), without hop-by-hop headers. */
export function multiMapToMap(headers: MultiMap): { [key: string]: Values } {
  const lower: IncomingHttpHeaders = {};
  for (const [name, values] of Object.entries(headers)) {
    const key = name.toLowerCase();
    const existing = lower[key];
    lower[key] = existing === undefined ? [...values] : [...(Array.isArray(existing) ? existing : [existing]), ...values];
  }
  return nodeHeadersToMap(lower);
}
