import type * as http from "node:http";
import * as http2 from "node:http2";
import type { AgentApiRequestHandler, AgentApiStreamHandler, TransportLogger } from "./agent-api-listener-options.js";

/**
 * What a request's authority becomes when it is not a host connect-node can build a URL with.
 * Nothing routes on it: KAS serves one set of methods whatever the client named.
 */
export const PLACEHOLDER_AUTHORITY = "localhost";

/**
 * Makes a request handler safe for any request a client can send:
 *
 * - Any `:authority` (or `Host`) is accepted, as grpc-go (GitLab's KAS) accepts it: GitLab's agentk
 *   over ws:// and wss:// sends its percent-encoded dial target (`ws:%2F%2Fkas:8150`), and HTTP/1.0
 *   may send none. connect-node builds `new URL(path, "http://" + authority)` outside any handler,
 *   which throws for those and would take the process down; such a request is handed on with
 *   {@link PLACEHOLDER_AUTHORITY} instead.
 * - Whatever else the handler throws synchronously is answered on that one request: a gRPC
 *   INTERNAL status for gRPC requests, `500` for others (or the stream is reset when the answer
 *   had begun), and logged.
 */
export function guardRequestHandler(handler: AgentApiRequestHandler, logger: TransportLogger | undefined, what: string): AgentApiRequestHandler {
  return (req, res) => {
    if (!hasUrlAuthority(req)) Object.defineProperty(req, "authority", { value: PLACEHOLDER_AUTHORITY, configurable: true });
    try {
      handler(req, res);
    } catch (err) {
      logger?.warn({ err, method: req.method, path: req.url }, `${what}: a request failed outside its handler`);
      answerRequestFailure(req, res);
    }
  };
}

/**
 * A stream handler that cannot throw: a stream it fails on is reset with INTERNAL_ERROR, alone,
 * and counts as taken.
 */
export function guardStreamHandler(handler: AgentApiStreamHandler, logger: TransportLogger | undefined, what: string): AgentApiStreamHandler {
  return (stream, headers) => {
    try {
      return handler(stream, headers);
    } catch (err) {
      logger?.warn({ err, path: headers[":path"] }, `${what}: a stream failed outside its handler`);
      resetStream(stream);
      return true;
    }
  };
}

/** Resets `stream` with INTERNAL_ERROR (a stream that is gone already is left alone). */
export function resetStream(stream: http2.Http2Stream): void {
  stream.on("error", ignore);
  try {
    if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  } catch {
    stream.destroy();
  }
}

/** Whether connect-node can build the request's URL from its authority and path. */
function hasUrlAuthority(req: http.IncomingMessage | http2.Http2ServerRequest): boolean {
  const authority = "authority" in req ? req.authority : req.headers.host;
  // `authority` is "" for an HTTP/2 request that named none.
  return typeof authority === "string" && authority !== "" && URL.canParse(req.url ?? "/", `http://${authority}`);
}

const grpcContentType = /^application\/grpc(?:[+;]|$)/;

/**
 * Answers a request that failed outside its handler, on its own stream or connection: a gRPC
 * INTERNAL status for gRPC requests, `500` for others, or a reset when the answer had begun.
 */
export function answerRequestFailure(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse): void {
  try {
    if (res.headersSent) {
      if ("stream" in res) resetStream(res.stream);
      else res.destroy();
      return;
    }
    if (grpcContentType.test(String(req.headers["content-type"] ?? ""))) {
      // Trailers-only gRPC answer: the status rides in the headers.
      res.writeHead(200, { "content-type": "application/grpc", "grpc-status": "13", "grpc-message": "internal error" });
      res.end();
    } else {
      res.writeHead(500, { "content-type": "text/plain; charset=utf-8", ...("stream" in res ? {} : { connection: "close" }) });
      res.end("internal error\n");
    }
  } catch {
    if ("stream" in res) resetStream(res.stream);
    else res.destroy();
  }
}

function ignore(): void {}
