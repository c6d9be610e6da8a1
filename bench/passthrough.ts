/**
 * The cost floor: HTTP/2 pass-through forwarders and a raw gRPC echo, built only on node:http2.
 *
 * A forwarder accepts a stream and replays it on one upstream connection: request headers, body
 * (piped, so backpressure is HTTP/2 flow control end to end), response headers, body and trailers.
 * It never parses gRPC frames, so it is the least work any hop can do.
 */
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  ServerStreamRequestSchema,
  ServerStreamResponseSchema,
} from "../sdk/src/gen/kasbridge/echo/v1/echo_pb.js";
import { closeServer, createWideServer, drained, h2Settings, listen, trackSessions, widenConnectionWindow } from "./common.js";

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM } = http2.constants;

export interface BenchServer {
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Forwards every stream it receives to `target` (an http:// URL) over one HTTP/2 connection. */
export async function startForwarder(target: string): Promise<BenchServer> {
  const upstream = http2.connect(target, { settings: h2Settings });
  upstream.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    upstream.once("connect", () => resolve());
    upstream.once("error", reject);
  });
  widenConnectionWindow(upstream);

  const server = createWideServer();
  const sessions = trackSessions(server);
  server.on("stream", (down, headers) => {
    const out: http2.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(headers)) {
      if (name === ":authority" || name === ":scheme") continue;
      out[name] = value;
    }
    const up = upstream.request(out);
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
  });
  const port = await listen(server);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      upstream.destroy();
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
