import type http2 from "node:http2";
import type { ConnectError } from "@connectrpc/connect";
import { drained } from "../util/drained.js";
import { FrameReader } from "./grpc-frames.js";
import { writeGrpcFrame } from "./grpc-message-writes.js";
import { parseGrpcTimeout } from "./grpc-timeout.js";
import { grpcStatusHeaders } from "./grpc-status-headers.js";

// gRPC on a raw HTTP/2 server stream: reading the request's headers and frames, writing messages
// and the status trailers, and routing the stream's events to whatever serves it.

export function firstHeader(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** What the authenticator reads of a raw request: only its bearer token. */
export function authorizationHeader(headers: http2.IncomingHttpHeaders): Headers {
  const header = new Headers();
  const authorization = firstHeader(headers.authorization);
  if (authorization !== undefined) header.set("authorization", authorization);
  return header;
}

/** A reader of the request's gRPC frames, honouring its grpc-encoding (throws UNIMPLEMENTED for others). */
export function requestFrameReader(headers: http2.IncomingHttpHeaders, maxMessageBytes: number): FrameReader {
  return new FrameReader(maxMessageBytes, firstHeader(headers["grpc-encoding"]) ?? "identity");
}

/** The request's `grpc-timeout` in ms, if any. */
export function requestTimeoutMs(headers: http2.IncomingHttpHeaders): number | undefined {
  return parseGrpcTimeout(firstHeader(headers["grpc-timeout"]) ?? null);
}

const resolved = Promise.resolve();
const responseHead = { ":status": 200, "content-type": "application/grpc", "grpc-accept-encoding": "gzip" };

/**
 * Writes one length-prefixed message in one piece (sending the response headers first if needed),
 * so that a reset (`resetAfterMessages`) never cuts it. Resolves at once, or when the stream drains
 * (backpressure) or closes. Throws if the stream was reset.
 */
export function writeGrpcMessage(stream: http2.ServerHttp2Stream, bytes: Uint8Array): Promise<void> {
  if (!stream.headersSent) stream.respond(responseHead, { waitForTrailers: true });
  return writeGrpcFrame(stream, bytes) ? resolved : drained(stream);
}

/**
 * Sends the status trailers (after headers, even when no message was sent) and ends our side of
 * the stream. The client ends its side once it has the status (gRPC clients do); a RST_STREAM sent
 * right after the trailers would overtake them.
 */
export function endGrpcResponse(stream: http2.ServerHttp2Stream, error: ConnectError | undefined): void {
  if (stream.destroyed || stream.closed || stream.writableEnded) return;
  if (!stream.headersSent) stream.respond(responseHead, { waitForTrailers: true });
  const trailers = grpcStatusHeaders(error);
  stream.once("wantTrailers", () => {
    try {
      stream.sendTrailers(trailers);
    } catch {
      // The stream was reset meanwhile.
    }
  });
  stream.end();
}

/** What serves a raw HTTP/2 stream: gets its request bytes, its end and its close. */
export interface RawStreamOwner {
  onData(chunk: Buffer): void;
  onEnd(): void;
  /** The stream closed (client gone, reset, session closed), whether or not its request had ended. */
  onClose(): void;
}

const kOwner = Symbol("kasbridge.rawStreamOwner");
type OwnedHttp2Stream = http2.ServerHttp2Stream & { [kOwner]?: RawStreamOwner };

// Listeners shared by every raw stream: an idle stream holds no closures of its own.
function onOwnedData(this: OwnedHttp2Stream, chunk: Buffer): void {
  this[kOwner]?.onData(chunk);
}
function onOwnedEnd(this: OwnedHttp2Stream): void {
  this[kOwner]?.onEnd();
}
function onOwnedClose(this: OwnedHttp2Stream): void {
  this[kOwner]?.onClose();
}

/** Routes the stream's events to `owner` through listeners shared by all streams. */
export function attachRawStream(stream: http2.ServerHttp2Stream, owner: RawStreamOwner): void {
  (stream as OwnedHttp2Stream)[kOwner] = owner;
  // Stream errors surface as "close".
  stream.on("error", ignore);
  stream.on("data", onOwnedData);
  stream.on("end", onOwnedEnd);
  stream.on("close", onOwnedClose);
}

/** Undoes {@link attachRawStream}; later request data is read and dropped so the stream can finish. */
export function detachRawStream(stream: http2.ServerHttp2Stream): void {
  stream.off("data", onOwnedData);
  stream.off("end", onOwnedEnd);
  stream.off("close", onOwnedClose);
  (stream as OwnedHttp2Stream)[kOwner] = undefined;
  stream.resume();
}

function ignore(): void {}
