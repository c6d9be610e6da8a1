// HTTP/2 by hand, as a hostile client would speak it: requests over node:http2 with whatever
// headers it lets through, and raw frames over a socket for everything else.
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { CLIENT_PREFACE, Http2FrameLog, encodeHttp2Frame, frameFlag, frameType } from "./http2-frames.test-support.js";
import { HUNG_MS, within } from "@kasbridge/testing/wait";

/** What came back on one stream. */
export interface RawHttp2Answer {
  /** The response headers (undefined: none arrived). */
  headers?: http2.IncomingHttpHeaders;
  trailers?: http2.IncomingHttpHeaders;
  body: Buffer;
  /** The stream's RST_STREAM code as the client saw it (NO_ERROR for a normal end). */
  rstCode: number;
  /** gRPC status: from the trailers, or from the headers of a trailers-only answer. */
  grpcStatus?: string;
}

/**
 * Sends one request on `session` (a URL opens a session of its own, closed afterwards) and
 * resolves when its stream has closed. Never rejects on stream errors: a reset is an answer too.
 */
export async function rawHttp2Request(
  target: string | http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer | Uint8Array,
): Promise<RawHttp2Answer> {
  const session = typeof target === "string" ? http2.connect(target) : target;
  // A session of the caller's has the caller's error listener.
  if (typeof target === "string") session.on("error", ignore);
  try {
    const stream = session.request(headers);
    stream.on("error", ignore);
    const answer: RawHttp2Answer = { body: Buffer.alloc(0), rstCode: 0 };
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (answer.headers = h));
    stream.on("trailers", (t) => (answer.trailers = t));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    const closed = new Promise<void>((resolve) => stream.once("close", resolve));
    stream.end(body);
    await within(HUNG_MS, closed, `${String(headers[":method"] ?? "GET")} ${String(headers[":path"] ?? "/")} to close`);
    answer.body = Buffer.concat(chunks);
    answer.rstCode = stream.rstCode ?? 0;
    const status = answer.trailers?.["grpc-status"] ?? answer.headers?.["grpc-status"];
    if (status !== undefined) answer.grpcStatus = String(status);
    return answer;
  } finally {
    if (typeof target === "string") session.close();
  }
}

function ignore(): void {}

/** Where raw frames go: host 127.0.0.1 unless given; TLS with ALPN h2 (certificates not checked). */
export interface RawHttp2Target {
  port: number;
  host?: string;
  tls?: boolean;
}

/**
 * A connected socket to `target` (TLS with `alpn`, certificates not checked), its errors ignored:
 * the caller watches "close".
 */
export function connectSocket(target: RawHttp2Target, alpn?: string[]): Promise<net.Socket> {
  const host = target.host ?? "127.0.0.1";
  return new Promise((resolve, reject) => {
    const socket: net.Socket = target.tls
      ? tls.connect({ port: target.port, host, ALPNProtocols: alpn, rejectUnauthorized: false }, () => connected())
      : net.connect(target.port, host, () => connected());
    const connected = () => {
      socket.off("error", reject);
      socket.on("error", ignore);
      resolve(socket);
    };
    socket.once("error", reject);
  });
}

/** What the server did with raw frames, once the client stopped waiting. */
export interface RawHttp2Outcome {
  /** The server's frames, parsed (streams ended or reset, GOAWAY). */
  fromServer: Http2FrameLog;
  /** Why the wait ended: the watched stream ended or was reset, a GOAWAY came, or the connection closed. */
  ended: "stream ended" | "stream reset" | "goaway" | "closed";
}

/**
 * Sends the connection preface, an empty SETTINGS and `frames` (any bytes, valid or not) on a new
 * connection, acknowledges the server's SETTINGS, and waits until stream `watch` is ended or reset
 * by the server, a GOAWAY arrives, or the connection closes; then closes it. Fails only when the
 * server does none of these (a hang).
 */
export async function sendRawHttp2(target: RawHttp2Target, frames: Buffer | Buffer[], watch = 1): Promise<RawHttp2Outcome> {
  const socket = await connectSocket(target, ["h2"]);
  const fromServer = new Http2FrameLog(false);
  try {
    const ended = await within(
      HUNG_MS,
      new Promise<RawHttp2Outcome["ended"]>((resolve) => {
        fromServer.onFrame = (type, flags, id) => {
          if (type === frameType.SETTINGS && !(flags & frameFlag.ACK) && socket.writable) socket.write(encodeHttp2Frame(frameType.SETTINGS, frameFlag.ACK, 0));
          if (type === frameType.GOAWAY) resolve("goaway");
          const stream = id === watch ? fromServer.streams.get(id) : undefined;
          if (stream?.reset) resolve("stream reset");
          else if (stream?.endStream) resolve("stream ended");
        };
        socket.on("data", (chunk: Buffer) => fromServer.push(chunk));
        socket.once("close", () => resolve("closed"));
        socket.write(Buffer.concat([CLIENT_PREFACE, encodeHttp2Frame(frameType.SETTINGS, 0, 0), ...(Array.isArray(frames) ? frames : [frames])]));
      }),
      "the server to answer, reset, send GOAWAY or close",
    );
    return { fromServer, ended };
  } finally {
    socket.destroy();
  }
}
