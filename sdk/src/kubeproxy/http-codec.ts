/**
 * HTTP over the tunnel (`grpctool.HttpRequest` / `HttpResponse` frames): header maps and the
 * hop-by-hop rules both halves of the Kubernetes API proxy share. Header names travel in Go's
 * canonical form (`Content-Type`), as GitLab's KAS and agentk put them in an `http.Header`.
 */
import { create } from "@bufbuild/protobuf";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { ValuesSchema, type Values } from "../gen/gitlab/agent/prototool/prototool_pb.js";

/** The tunnel method of the Kubernetes API proxy. */
export const MAKE_REQUEST_METHOD = "/gitlab.agent.kubernetes_api.rpc.KubernetesApi/MakeRequest";

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
 * Node headers -> tunnel header map, without hop-by-hop headers and those `drop` names (lowercase).
 * With `keepUpgrade`, `Connection: Upgrade` and `Upgrade` are kept (the agent must send them on).
 */
export function nodeHeadersToMap(
  headers: IncomingHttpHeaders,
  options: { drop?: (lowerName: string) => boolean; keepUpgrade?: boolean } = {},
): { [key: string]: Values } {
  const out: { [key: string]: Values } = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":")) continue;
    const lower = name.toLowerCase();
    if (options.drop?.(lower)) continue;
    if (hopByHop.has(lower)) {
      if (!(options.keepUpgrade && lower === "upgrade")) continue;
    }
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
 * Tunnel header map -> Node outgoing headers. `forHttp2` drops the connection-specific headers
 * HTTP/2 forbids; `keepUpgrade` keeps Connection/Upgrade (101 answers and upgrade requests).
 */
export function mapToNodeHeaders(map: { [key: string]: Values }, options: { forHttp2?: boolean; keepUpgrade?: boolean } = {}): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, values] of Object.entries(map)) {
    const lower = name.toLowerCase();
    if (hopByHop.has(lower) && !(options.keepUpgrade && (lower === "upgrade" || lower === "connection"))) continue;
    if (options.forHttp2 && (lower === "upgrade" || lower === "connection")) continue;
    if (values.value.length === 0) continue;
    out[name] = values.value.length === 1 ? values.value[0] : [...values.value];
  }
  return out;
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

/** Raw HTTP/1.1 response head for a socket we answer ourselves (upgrades and their refusals). */
export function rawResponseHead(statusCode: number, statusMessage: string, headers: OutgoingHttpHeaders): string {
  let head = `HTTP/1.1 ${statusCode} ${statusMessage.replace(/[\r\n]/g, "")}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${String(v).replace(/[\r\n]/g, "")}\r\n`;
  }
  return `${head}\r\n`;
}
