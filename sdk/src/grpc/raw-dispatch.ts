import type http2 from "node:http2";

/**
 * Dispatch of agent API methods served over gRPC directly on the raw HTTP/2 stream (the
 * agent API listener's `streamHandler`), ahead of Node's compatibility layer and connect-es. They
 * exist for long-lived, mostly idle streams that every agent holds (tunnels, GetConfiguration):
 * connect-es keeps a promise chain, queues and closures per open call (tens of KiB); here an idle
 * stream is one small object with listeners shared by all streams.
 */

/** Handles one HTTP/2 stream of its method; false passes the stream on (e.g. to connect-es). */
export type RawStreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** A gRPC method served on raw HTTP/2 streams: `path` is `/<service>/<method>`. */
export interface RawGrpcMethod {
  readonly path: string;
  readonly handle: RawStreamHandler;
}

/**
 * One stream handler for several raw methods, chosen by `:path` (one map lookup per stream);
 * streams of other paths, and those a method declines, are passed on (false).
 */
export function rawGrpcMethods(methods: readonly RawGrpcMethod[]): RawStreamHandler {
  const byPath = new Map<string, RawStreamHandler>();
  for (const method of methods) {
    if (byPath.has(method.path)) throw new Error(`two raw handlers for ${method.path}`);
    byPath.set(method.path, method.handle);
  }
  return (stream, headers) => {
    const path = headers[":path"];
    const handle = path === undefined ? undefined : byPath.get(path);
    return handle ? handle(stream, headers) : false;
  };
}

/** A gRPC request over HTTP/2 for `path` (Connect and gRPC-web requests are not). */
export function isGrpcRequest(headers: http2.IncomingHttpHeaders, path: string): boolean {
  if (headers[":method"] !== "POST" || headers[":path"] !== path) return false;
  const contentType = headers["content-type"];
  return contentType === "application/grpc" || contentType === "application/grpc+proto";
}
