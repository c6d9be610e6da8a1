/**
 * The cost floor: HTTP/2 pass-through forwarders and a raw gRPC echo, built only on node:http2.
 *
 * A forwarder accepts a stream and replays it on one upstream connection: request headers, body
 * (piped, so backpressure is HTTP/2 flow control end to end), response headers, body and trailers.
 * It never parses gRPC frames, so it is the least work any hop can do.
 */
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  ServerStreamRequestSchema,
  ServerStreamResponseSchema,
} from "../sdk/src/gen/kasbridge/echo/v1/echo_pb.js";
import { closeServer, createWideServer, drained, h2Settings, listen, trackSessions, widenConnectionWindow } from "./common.js";

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR } = http2.constants;

export interface BenchServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

export interface ForwarderOptions {
  /** Serve TLS (HTTP/2 only, ALPN h2) with this certificate instead of h2c. */
  tls?: { cert: Buffer; key: Buffer };
  /** Options of the one upstream connection (e.g. `ca` for an https:// target). */
  connect?: http2.SecureClientSessionOptions;
  /** Headers set on every upstream request, replacing the client's (e.g. `authorization`). */
  setHeaders?: http2.OutgoingHttpHeaders;
}

/**
 * Forwards every stream it receives to `target` (an http:// or https:// URL) over one HTTP/2
 * connection.
 */
export async function startForwarder(target: string, options: ForwarderOptions = {}): Promise<BenchServer> {
  const upstream = http2.connect(target, { settings: h2Settings, ...options.connect });
  upstream.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    upstream.once("connect", () => resolve());
    upstream.once("error", reject);
  });
  widenConnectionWindow(upstream);

  const server = options.tls ? createWideSecureServer(options.tls) : createWideServer();
  const sessions = trackSessions(server);
  server.on("stream", (down, headers) => {
    const out: http2.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
      if (name === ":authority" || name === ":scheme") continue;
      out[name] = value;
    }
    Object.assign(out, options.setHeaders);
    relay(down, upstream.request(out));
  });
  const port = await listen(server);
  return {
    port,
    url: `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
    async close() {
      upstream.destroy();
      await closeServer(server, sessions);
    },
  };
}

/**
 * Replays a stream: request body piped up, response headers, body and trailers piped down
 * (trailers-only responses, resets both ways).
 */
function relay(down: http2.ServerHttp2Stream, up: http2.ClientHttp2Stream): void {
  let trailers: http2.IncomingHttpHeaders = {};
  down.on("error", () => {});
  up.on("error", () => {});
  down.pipe(up);
  up.on("response", (responseHeaders, flags) => {
    if (down.destroyed) return;
    if (flags & NGHTTP2_FLAG_END_STREAM) {
      // Trailers-only response.
      down.respond(responseHeaders, { endStream: true });
      return;
    }
    down.respond(responseHeaders, { waitForTrailers: true });
    up.pipe(down);
  });
  up.on("trailers", (t) => (trailers = t));
  down.on("wantTrailers", () => down.sendTrailers(trailers));
  up.on("close", () => {
    if (!down.closed && up.rstCode !== undefined && up.rstCode !== 0) down.close(up.rstCode);
  });
  down.on("close", () => {
    if (!up.closed) up.close(NGHTTP2_CANCEL);
  });
}

/**
 * A TLS HTTP/2 server (ALPN h2 only) with the bench's window settings. Typed as `Http2Server`: the
 * helpers of common.ts use only the `net.Server` API and the `session`/`stream` events both share.
 */
function createWideSecureServer(tls: { cert: Buffer; key: Buffer }): http2.Http2Server {
  const server = http2.createSecureServer({ ...tls, settings: h2Settings });
  server.on("session", (session) => widenConnectionWindow(session));
  return server as unknown as http2.Http2Server;
}

/** Hop-by-hop HTTP/1.1 response headers, which HTTP/2 forbids. */
const hopByHop = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/**
 * Forwards every HTTP/2 stream it receives to `target` as an HTTP/1.1 request on a keep-alive
 * `https.Agent` pool (how the agent reaches the kube-apiserver): request body piped up, response
 * status, headers (less HTTP/1.1's hop-by-hop ones) and body piped down. h2c on the listening side.
 */
export async function startHttp1Forwarder(target: string, options: { ca?: Buffer; setHeaders?: http.OutgoingHttpHeaders } = {}): Promise<BenchServer> {
  const base = new URL(target);
  const secure = base.protocol === "https:";
  const agent = secure ? new https.Agent({ keepAlive: true, ca: options.ca }) : new http.Agent({ keepAlive: true });
  const server = createWideServer();
  const sessions = trackSessions(server);
  server.on("stream", (down, headers) => {
    const out: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
      if (name.startsWith(":")) continue;
      out[name] = value;
    }
    Object.assign(out, options.setHeaders);
    const up = (secure ? https : http).request({
      agent,
      hostname: base.hostname,
      port: base.port,
      method: headers[":method"],
      path: base.pathname.replace(/\/$/, "") + (headers[":path"] ?? "/"),
      headers: out,
    });
    let responseDone = false;
    down.on("error", () => {});
    up.on("error", () => {
      if (!down.destroyed) down.close(NGHTTP2_INTERNAL_ERROR);
    });
    down.pipe(up);
    up.on("response", (res) => {
      res.once("end", () => (responseDone = true));
      if (down.destroyed) return void res.destroy();
      const responseHeaders: http2.OutgoingHttpHeaders = { ":status": res.statusCode ?? 502 };
      for (const [name, value] of Object.entries(res.headers)) if (!hopByHop.has(name)) responseHeaders[name] = value;
      down.respond(responseHeaders);
      res.pipe(down);
    });
    // The client went away mid-response: drop the upstream request (and its connection).
    down.on("close", () => {
      if (!responseDone) up.destroy();
    });
  });
  const port = await listen(server);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      agent.destroy();
      await closeServer(server, sessions);
    },
  };
}

const echoPath = "/kasbridge.echo.v1.EchoService/Echo";
const serverStreamPath = "/kasbridge.echo.v1.EchoService/ServerStream";

/**
 * A minimal EchoService over raw node:http2: Echo returns the request message as the response
 * (field 1 is `bytes payload` in both), ServerStream writes prebuilt length-prefixed frames. No
 * connect-es on the server side at all.
 */
export async function startRawEcho(): Promise<BenchServer> {
  const server = createWideServer();
  const sessions = trackSessions(server);
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    const path = headers[":path"];
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      const body = Buffer.concat(chunks);
      const message = body.subarray(5, 5 + body.readUInt32BE(1));
      if (path === echoPath) {
        const { payload } = fromBinary(EchoRequestSchema, message);
        const reply = toBinary(EchoResponseSchema, create(EchoResponseSchema, { payload, servedBy: "raw" }));
        respond(stream);
        stream.end(frame(reply));
      } else if (path === serverStreamPath) {
        const req = fromBinary(ServerStreamRequestSchema, message);
        respond(stream);
        void writeStream(stream, req.count, req.size);
      } else {
        stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "12" }, { endStream: true });
      }
    });
  });
  const port = await listen(server);
  return { port, url: `http://127.0.0.1:${port}`, close: () => closeServer(server, sessions) };
}

function respond(stream: http2.ServerHttp2Stream): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "" }));
}

function frame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.byteLength);
  out[0] = 0;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}

async function writeStream(stream: http2.ServerHttp2Stream, count: number, size: number): Promise<void> {
  // Every message has the same payload, prebuilt once; only \`index\` (field 2, a varint) changes.
  const body = toBinary(ServerStreamResponseSchema, create(ServerStreamResponseSchema, { payload: new Uint8Array(size).fill(0x61) }));
  for (let index = 0; index < count && !stream.destroyed; index++) {
    const tail = index === 0 ? Buffer.alloc(0) : Buffer.from(toBinary(ServerStreamResponseSchema, create(ServerStreamResponseSchema, { index })));
    const header = Buffer.allocUnsafe(5);
    header[0] = 0;
    header.writeUInt32BE(body.byteLength + tail.byteLength, 1);
    stream.cork();
    stream.write(header);
    let ok = stream.write(body);
    if (tail.byteLength > 0) ok = stream.write(tail);
    stream.uncork();
    if (!ok) await drained(stream);
  }
  stream.end();
}
