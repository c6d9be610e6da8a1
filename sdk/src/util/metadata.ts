import { validateHeaderName, validateHeaderValue } from "node:http";
import { create } from "@bufbuild/protobuf";
import { ValuesSchema, type Values } from "../gen/gitlab/agent/prototool/prototool_pb.js";

/** gRPC metadata as carried in the tunnel: `map<string, prototool.Values>`. */
export type MetaMap = { [key: string]: Values };

/** Headers that belong to the HTTP/2 or gRPC framing, never copied as call metadata. */
const reservedHeaders = new Set([
  "content-type",
  "content-length",
  "te",
  "trailer",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "upgrade",
  "host",
  "user-agent",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "accept-encoding",
  "content-encoding",
]);

export function isReservedHeader(name: string): boolean {
  return name.startsWith(":") || reservedHeaders.has(name);
}

/** Converts Headers to tunnel metadata, dropping framing headers and those `drop` rejects. */
export function headersToMeta(headers: Headers, drop?: (name: string) => boolean): MetaMap {
  const meta: MetaMap = {};
  headers.forEach((value, name) => {
    if (isReservedHeader(name) || drop?.(name)) return;
    // Headers joins repeated values with ", "; binary (-bin) values are base64 and never contain ",".
    const values = name.endsWith("-bin") ? value.split(/,\s*/) : [value];
    meta[name] = create(ValuesSchema, { value: values });
  });
  return meta;
}

/** Appends tunnel metadata to Headers (framing headers in `meta` are ignored). */
export function metaToHeaders(meta: MetaMap, target = new Headers()): Headers {
  for (const [name, values] of Object.entries(meta)) {
    const key = name.toLowerCase();
    if (isReservedHeader(key)) continue;
    for (const value of values.value) target.append(key, value);
  }
  return target;
}

/** Converts Node's incoming HTTP/2 headers object to Headers (pseudo-headers skipped). */
export function nodeHeadersToHeaders(nodeHeaders: Record<string, string | string[] | undefined>): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(nodeHeaders)) {
    if (name.startsWith(":") || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  return headers;
}

/**
 * Converts tunnel metadata (an agent's answer) to Node's outgoing HTTP/2 headers object. Entries
 * Node would refuse to send (a name that is no HTTP token, a value with CR, LF, NUL or another
 * control character) are dropped and passed to `onInvalid`: Node throws on them, and an agent's
 * answer must not be able to fail the caller's stream, let alone the process.
 */
export function metaToNodeHeaders(meta: MetaMap, onInvalid?: (name: string) => void): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, values] of Object.entries(meta)) {
    const key = name.toLowerCase();
    if (isReservedHeader(key) || values.value.length === 0) continue;
    if (!isValidHeader(key, values.value)) {
      onInvalid?.(name);
      continue;
    }
    out[key] = [...values.value];
  }
  return out;
}

/** Node's checks for a header it would send: the name an HTTP token, no control characters (CR, LF, NUL…) in values. */
export function isValidHeader(name: string, values: readonly string[]): boolean {
  try {
    validateHeaderName(name);
    for (const v of values) validateHeaderValue(name, v);
    return true;
  } catch {
    return false;
  }
}
