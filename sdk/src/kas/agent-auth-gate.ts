import type * as http from "node:http";
import type * as http2 from "node:http2";
import { ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus, endStreamFlag, endStreamToJson, errorToJsonBytes, parseContentType } from "@connectrpc/connect/protocol-connect";
import type { AgentApiRequestHandler, TransportLogger } from "../transport/agent-api-listener-options.js";
import { answerRequestFailure } from "../transport/request-guard.js";
import { frameHeader } from "../grpc/grpc-frames.js";
import { drainRefusedBody } from "../util/refused-body.js";
import type { AgentAuthenticator } from "./agent-authenticator.js";
import { grpcStatusHeaders } from "../grpc/grpc-status-headers.js";
import { authorizationHeader } from "../grpc/raw-wire.js";

type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;
type AnyResponse = http.ServerResponse | http2.Http2ServerResponse;

/**
 * Authenticates every agent API request from its headers before anything of its body is read.
 * connect-es reads and decodes a unary request's whole body (up to the message limit, 16 MiB by
 * default) before the service's handler can look at the token, so a stranger could make KAS hold
 * that much per request. A request whose token the platform does not know (or that has none) is
 * answered with UNAUTHENTICATED in the protocol it speaks (gRPC, gRPC-Web or Connect) and its body
 * is not read: the HTTP/2 stream is reset (NO_ERROR, after the answer) and the HTTP/1.1 connection
 * closed once the answer is out. Unread bytes are bounded by the stream's flow-control window
 * (HTTP/2) or the socket's buffers (HTTP/1.1). The services authenticate again (a cache hit).
 */
export function authenticateBeforeBody(handler: AgentApiRequestHandler, auth: AgentAuthenticator, logger?: TransportLogger): AgentApiRequestHandler {
  return (req, res) => {
    auth.authenticate(authorizationHeader(req.headers)).then(
      () => {
        // A client that left during authentication has nothing left to serve.
        if (isGone(req)) return;
        try {
          handler(req, res);
        } catch (err) {
          logger?.warn({ err, method: req.method, path: req.url }, "agent API: a request failed outside its handler");
          answerRequestFailure(req, res);
        }
      },
      (error: unknown) => {
        const refusal = ConnectError.from(error);
        logger?.debug({ path: req.url, code: refusal.code, reason: refusal.rawMessage }, "agent API: request refused before its body was read");
        if (!isGone(req)) refuse(req, res, refusal);
      },
    );
  };
}

function isGone(req: AnyRequest): boolean {
  return "stream" in req ? req.stream.destroyed || req.stream.closed : req.destroyed || req.socket.destroyed;
}

const grpcContentType = /^application\/grpc(?:-web(?:-text)?)?(?:[+;]|$)/i;

/** Answers `error` in the request's protocol, without reading its body. */
function refuse(req: AnyRequest, res: AnyResponse, error: ConnectError): void {
  const contentType = String(req.headers["content-type"] ?? "");
  const http1 = !("stream" in res);
  const close: http.OutgoingHttpHeaders = http1 ? { connection: "close" } : {};
  try {
    if (grpcContentType.test(contentType)) {
      // gRPC and gRPC-Web: a trailers-only answer, the status in the headers.
      res.writeHead(200, { ...close, "content-type": contentType.split(";")[0], ...grpcStatusHeaders(error) });
      res.end();
    } else if (parseContentType(contentType)?.stream) {
      // Connect streaming: an end-of-stream message carrying the error.
      const json = new TextEncoder().encode(JSON.stringify(endStreamToJson(new Headers(), error, {})));
      res.writeHead(200, { ...close, "content-type": contentType });
      res.end(Buffer.concat([frameHeader(json.byteLength), json]).fill(endStreamFlag, 0, 1));
    } else {
      // Connect unary (and anything else): the HTTP status of the code, the error as JSON.
      res.writeHead(codeToHttpStatus(error.code), { ...close, "content-type": "application/json" });
      res.end(errorToJsonBytes(error, {}));
    }
  } catch {
    answerRequestFailure(req, res);
    return;
  }
  // HTTP/2: once the answer is out, Node resets a stream whose body nobody read with NO_ERROR,
  // which tells the client to stop sending (RFC 9113 section 8.1). HTTP/1.1: closing with unread
  // data would reset the connection under the answer, so a little is read off first.
  if (http1) drainRefusedBody(req as http.IncomingMessage);
}
