import { expect } from "chai";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import { fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape, create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  EchoService,
  FailRequestSchema,
  ServerStreamRequestSchema,
  ServerStreamResponseSchema,
} from "../gen/kasbridge/echo/v1/echo_pb.js";
import { type AgentApiListener, createAgentApiListener } from "./agent-api-listener.js";
import { parseAgentApiAddress } from "./agent-connection.js";
import { type AgentTransport, type AgentTransportOptions, agentUserAgent, createAgentTransport } from "./agent-transport.js";
import type { GrpcClientStream } from "./grpc-client-stream.js";
import { createWebSocketTunnelAcceptor } from "./websocket-tunnel.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen as listenOn } from "@kasbridge/testing/servers";
import { encodeHttp2Frame, frameType, Http2FrameLog, tappedGrpcServer } from "../grpc/http2-frames.test-support.js";
import { tcpProxy } from "@kasbridge/testing/tcp-proxy";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { HUNG_MS, rejection, waitFor, within } from "@kasbridge/testing/wait";
import { type EchoObservations, echoHandler } from "./fixtures.test-support.js";

/** A call with one request message as a raw gRPC stream on the transport (the agent tunnel's path). */
function rawCall<I extends DescMessage, O extends DescMessage>(
  t: AgentTransport,
  method: string,
  input: I,
  output: O,
  request: MessageInitShape<I>,
): GrpcClientStream<MessageShape<I>, MessageShape<O>> {
  const stream = t.grpcStream!(`/${EchoService.typeName}/${method}`, {
    encode: (m: MessageShape<I>) => toBinary(input, m),
    decode: (b) => fromBinary(output, b),
  });
  void stream.send(create(input, request)).catch(() => {});
  stream.closeSend();
  return stream;
}

async function collect<O>(stream: AsyncIterator<O>): Promise<O[]> {
  const out: O[] = [];
  for (let r = await stream.next(); !r.done; r = await stream.next()) out.push(r.value);
  return out;
}

describe("transport/agent-transport", function () {
  this.timeout(20_000);
  const cert = selfSignedCertificate();
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  async function listen(secure: boolean, observed?: EchoObservations, port = 0): Promise<AgentApiListener> {
    const listener = await createAgentApiListener({ handler: echoHandler(observed), port, tls: secure ? cert : undefined });
    cleanup.add(() => listener.close(0));
    return listener;
  }

  function agent(url: string, options: Partial<AgentTransportOptions> = {}): AgentTransport {
    const t = createAgentTransport({ url, ca: cert.cert, ...options });
    cleanup.add(() => t.close());
    return t;
  }

  it("parses KAS addresses like agentk", () => {
    expect(parseAgentApiAddress("grpc://kas.example.com")).to.include({ port: 80, origin: "http://kas.example.com:80" });
    expect(parseAgentApiAddress("grpcs://kas.example.com")).to.include({ port: 443, origin: "https://kas.example.com:443" });
    expect(parseAgentApiAddress("wss://gitlab.example.com/-/kubernetes-agent/")).to.include({
      port: 443,
      origin: "http://gitlab.example.com:443",
      href: "wss://gitlab.example.com/-/kubernetes-agent/",
    });
    expect(parseAgentApiAddress("ws://[::1]:8150")).to.include({ host: "::1", port: 8150, origin: "http://[::1]:8150" });
    expect(() => parseAgentApiAddress("https://kas.example.com")).to.throw(/unsupported scheme/);
    expect(agentUserAgent("v16.5.0", "abc123")).to.equal("gitlab-agent/v16.5.0/abc123");
  });

  for (const scheme of ["grpc", "grpcs", "ws", "wss"] as const) {
    const secure = scheme === "grpcs" || scheme === "wss";

    describe(`over ${scheme}://`, () => {
      let listener: AgentApiListener;
      let observed: EchoObservations;
      let client: ReturnType<typeof createClient<typeof EchoService>>;
      let t: AgentTransport;

      beforeEach(async () => {
        observed = {};
        listener = await listen(secure, observed);
        t = agent(listener.url(scheme, "/-/kubernetes-agent/"), {
          headers: { "x-kas-header": "from-option", authorization: "Bearer agent-token" },
          callHeaders: { "x-call-header": "on-every-call" },
          userAgent: agentUserAgent("v16.5.0", "abc123"),
        });
        client = createClient(EchoService, t.transport);
      });

      it("opens raw gRPC streams on the same connection with the same headers (the tunnel's path)", async () => {
        await client.echo({});
        const connectHeaders = observed.lastHeaders!;
        const payload = new Uint8Array(64 * 1024).fill(3);
        const [res] = await collect(rawCall(t, "Echo", EchoRequestSchema, EchoResponseSchema, { payload }));
        expect(res.payload).to.deep.equal(payload);
        const h = observed.lastHeaders!;
        expect(observed.lastSession).to.equal([...listener.sessions.keys()][0]);
        expect(listener.sessions.size).to.equal(1);
        for (const name of ["x-kas-header", "x-call-header", "authorization", "user-agent", "grpc-encoding", "content-type", "te", "grpc-accept-encoding"]) {
          expect(h.get(name), name).to.equal(connectHeaders.get(name));
        }
        expect(h.get("x-call-header")).to.equal("on-every-call");
        expect(h.get("grpc-encoding")).to.equal("gzip");

        const messages = await collect(rawCall(t, "ServerStream", ServerStreamRequestSchema, ServerStreamResponseSchema, { count: 20, size: 1024 * 1024 }));
        expect(messages.map((m) => m.index)).to.deep.equal([...Array(20).keys()]);
        expect(messages.every((m) => m.payload.length === 1024 * 1024)).to.equal(true);

        const err = await rejection(collect(rawCall(t, "Fail", FailRequestSchema, EchoResponseSchema, { code: Code.PermissionDenied, message: "no access ü" })));
        expect(err.code).to.equal(Code.PermissionDenied);
        expect(err.rawMessage).to.equal("no access ü");
        expect(err.metadata.get("x-fail-trailer")).to.equal("t");
      });

      it("makes unary calls with headers, user agent and gzip", async () => {
        const payload = new Uint8Array(64 * 1024).fill(3);
        const res = await client.echo({ payload }, { headers: { authorization: "Bearer per-call" } });
        expect(res.payload).to.deep.equal(payload);
        const h = observed.lastHeaders!;
        expect(h.get("x-kas-header")).to.equal("from-option");
        expect(h.get("authorization")).to.equal("Bearer per-call"); // the call's own header wins
        expect(h.get("user-agent")).to.equal("gitlab-agent/v16.5.0/abc123");
        expect(h.get("grpc-encoding")).to.equal("gzip");
        expect(h.get("content-type")).to.equal("application/grpc+proto");
        const info = listener.sessionInfo(observed.lastSession);
        expect(info?.transport).to.equal(scheme === "grpc" ? "h2c" : scheme === "grpcs" ? "h2" : scheme);
        if (scheme === "ws" || scheme === "wss") {
          expect(info?.webSocketHandshake?.path).to.equal("/-/kubernetes-agent/");
          expect(info?.webSocketHandshake?.headers["x-kas-header"]).to.equal("from-option");
          expect(info?.webSocketHandshake?.headers["user-agent"]).to.equal("gitlab-agent/v16.5.0/abc123");
          expect(info?.webSocketHandshake?.headers["sec-websocket-extensions"]).to.equal(undefined); // no compression
        }
      });

      it("streams 20 MB from the server in order", async () => {
        let bytes = 0;
        let next = 0;
        for await (const m of client.serverStream({ count: 20, size: 1024 * 1024, echoHeader: "x-kas-header" })) {
          expect(m.index).to.equal(next++);
          bytes += m.payload.length;
        }
        expect(bytes).to.equal(20 * 1024 * 1024);
      });

      it("carries client streams and bidi streams", async () => {
        const res = await client.clientStream(
          (async function* () {
            for (let i = 0; i < 10; i++) yield { payload: new Uint8Array(1000) };
          })(),
        );
        expect(res.messages).to.equal(10);
        expect(res.totalBytes).to.equal(10_000n);

        const queue: number[] = [];
        let wake: (() => void) | undefined;
        const requests = (async function* () {
          for (let i = 0; i < 10; i++) {
            yield { payload: new Uint8Array([i]) };
            // Wait for the echo: a real ping-pong, not a buffered batch.
            while (queue.length <= i) await new Promise<void>((resolve) => (wake = resolve));
          }
        })();
        for await (const m of client.bidi(requests)) {
          queue.push(m.payload[0]!);
          wake?.();
        }
        expect(queue).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      });

      it("passes error codes, messages, headers and trailers through", async () => {
        const err = await rejection(client.fail({ code: Code.PermissionDenied, message: "no access" }));
        expect(err.code).to.equal(Code.PermissionDenied);
        expect(err.rawMessage).to.equal("no access");
        expect(err.metadata.get("x-fail-header")).to.equal("h");
        expect(err.metadata.get("x-fail-trailer")).to.equal("t");
      });
    });
  }

  for (const scheme of ["grpc", "grpcs", "ws", "wss"] as const) {
    const secure = scheme === "grpcs" || scheme === "wss";

    it(`fails in-flight calls with Unavailable when KAS goes away and reconnects (${scheme})`, async () => {
      const observed: EchoObservations = {};
      const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
      const first = await listen(secure, observed);
      const t = agent(first.url(scheme));
      const client = createClient(EchoService, t.transport);
      const call = rejection(client.serverStream({ count: 0 })[Symbol.asyncIterator]().next());
      await within(HUNG_MS, started, "stream start");
      const raw = rejection(rawCall(t, "ServerStream", ServerStreamRequestSchema, ServerStreamResponseSchema, { count: 0 }).next());
      await first.close(0);
      const err = await call;
      expect(err.code, err.message).to.equal(Code.Unavailable);
      const rawErr = await raw;
      expect(rawErr.code, rawErr.message).to.equal(Code.Unavailable);
      expect((await rejection(client.echo({}))).code).to.equal(Code.Unavailable);
      // KAS is back on the same port: the next call reconnects.
      await listen(secure, undefined, first.address.port);
      expect((await client.echo({ payload: new Uint8Array([5]) })).payload).to.deep.equal(new Uint8Array([5]));
    });

    it(`notices a silently dead connection through PINGs (${scheme})`, async () => {
      const observed: EchoObservations = {};
      const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
      const listener = await listen(secure, observed);
      const proxy = await tcpProxy(listener.address.port);
      cleanup.add(() => proxy.close());
      const t = agent(`${scheme}://localhost:${proxy.port}`, { pingIntervalMs: 100, pingTimeoutMs: 100 });
      const client = createClient(EchoService, t.transport);
      const call = rejection(client.serverStream({ count: 0 })[Symbol.asyncIterator]().next());
      await within(HUNG_MS, started, "stream start");
      proxy.frozen = true;
      // The default PING interval (55 s) is far beyond this bound: only the 100 ms one can end the call.
      const err = await within(HUNG_MS, call, "dead connection detection");
      expect(err.code).to.equal(Code.Unavailable);
      proxy.frozen = false;
      expect((await client.echo({ payload: new Uint8Array([6]) })).payload).to.deep.equal(new Uint8Array([6]));
    });

    it(`fails with Unavailable when KAS accepts but never answers (${scheme})`, async () => {
      const sockets = new Set<net.Socket>();
      const silent = net.createServer((s) => {
        sockets.add(s);
        s.on("error", () => {});
      });
      const port = await listenOn(silent);
      cleanup.add(() => {
        for (const s of sockets) s.destroy();
        return closeServer(silent);
      });
      const t = agent(`${scheme}://127.0.0.1:${port}`, { connectTimeoutMs: 200 });
      // The default connect timeout (20 s) is beyond this bound: only the 200 ms one can end the call.
      const err = await within(HUNG_MS, rejection(createClient(EchoService, t.transport).echo({})), "connect timeout");
      expect(err.code, err.message).to.equal(Code.Unavailable);
    });
  }

  // A stream closed with NO_ERROR before KAS answered ends no connect-node call: one waiting for its
  // response would wait forever. With the connection up that is INTERNAL (as grpc-go maps it);
  // after a GOAWAY it is the connection going away, UNAVAILABLE, so callers retry.
  for (const scheme of ["grpc", "ws"] as const) {
    for (const { ending, code } of [
      { ending: "sends GOAWAY (NO_ERROR) and closes the connection", code: Code.Unavailable },
      { ending: "resets the stream with NO_ERROR", code: Code.Internal },
    ]) {
      it(`fails a call KAS never answers when KAS ${ending} (${scheme})`, async () => {
        const { SETTINGS, HEADERS, GOAWAY, RST_STREAM } = frameType;
        // A KAS that speaks HTTP/2 frames by hand.
        const serve = (connection: Duplex, ws?: WebSocket) => {
          connection.on("error", () => {});
          cleanup.track(connection);
          const received = new Http2FrameLog(true);
          connection.write(encodeHttp2Frame(SETTINGS, 0, 0));
          connection.on("data", (chunk: Buffer) => {
            const seen = received.frames.length;
            received.push(chunk);
            for (const frame of received.frames.slice(seen)) {
              if (frame.type === SETTINGS && !(frame.flags & 1)) connection.write(encodeHttp2Frame(SETTINGS, 1, 0));
              if (frame.type !== HEADERS) continue;
              const payload = Buffer.alloc(8);
              if (code === Code.Unavailable) {
                payload.writeUInt32BE(frame.id, 0); // the last stream taken: this call's; NO_ERROR
                // Then the connection drops (as when KAS's grace period ends): no close handshake.
                connection.write(encodeHttp2Frame(GOAWAY, 0, 0, payload), () => (ws ? ws.terminate() : connection.destroy()));
              } else {
                connection.write(encodeHttp2Frame(RST_STREAM, 0, frame.id, payload.subarray(0, 4)));
              }
            }
          });
        };
        let server: net.Server;
        if (scheme === "ws") {
          const acceptor = createWebSocketTunnelAcceptor({ onTunnel: (connection, ws) => serve(connection, ws) });
          server = http.createServer();
          server.on("upgrade", (req, socket, head) => acceptor.handleUpgrade(req, socket as Duplex, head));
          cleanup.add(() => closeServer(server));
          cleanup.add(() => acceptor.terminateAll());
        } else {
          server = net.createServer(serve);
          cleanup.add(() => closeServer(server));
        }
        const port = await listenOn(server);
        const t = agent(`${scheme}://127.0.0.1:${port}`);
        const err = await within(HUNG_MS, rejection(createClient(EchoService, t.transport).echo({})), "the call to fail");
        expect(err.code, err.message).to.equal(code);
      });
    }
  }

  it("fails with Unavailable when KAS is not listening or its certificate is not trusted", async () => {
    const listener = await listen(true);
    for (const url of [listener.url("grpcs"), listener.url("wss")]) {
      const untrusted = agent(url, { ca: undefined });
      const err = await rejection(createClient(EchoService, untrusted.transport).echo({}));
      expect(err.code, err.message).to.equal(Code.Unavailable);
      expect(err.message).to.match(/self-signed certificate/);
    }
    const insecure = agent(listener.url("grpcs"), { ca: undefined, rejectUnauthorized: false });
    await createClient(EchoService, insecure.transport).echo({});
    const port = listener.address.port;
    await listener.close(0);
    for (const scheme of ["grpc", "ws"]) {
      const t = agent(`${scheme}://127.0.0.1:${port}`);
      expect((await rejection(createClient(EchoService, t.transport).echo({}))).code).to.equal(Code.Unavailable);
    }
  });

  it("refuses a server that does not accept the ws-tunnel subprotocol", async () => {
    const plain = net.createServer((s) => {
      s.on("error", () => {});
      s.once("data", () => s.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"));
    });
    const port = await listenOn(plain);
    cleanup.add(() => closeServer(plain));
    const t = agent(`ws://127.0.0.1:${port}`);
    const err = await rejection(createClient(EchoService, t.transport).echo({}));
    expect(err.code).to.equal(Code.Unavailable);
    expect(err.message).to.match(/400/);
  });

  it("runs user interceptors and honours readMaxBytes", async () => {
    const listener = await listen(false);
    const seen: string[] = [];
    const interceptor: Interceptor = (next) => (req) => {
      seen.push(req.method.name);
      return next(req);
    };
    const t = agent(listener.url(), { interceptors: [interceptor], readMaxBytes: 1000 });
    const client = createClient(EchoService, t.transport);
    await client.echo({ payload: new Uint8Array(10) });
    const err = await rejection(client.echo({ payload: new Uint8Array(5000) }));
    expect(err.code).to.equal(Code.ResourceExhausted);
    expect(seen).to.deep.equal(["Echo", "Echo"]);
  });

  it("raw streams: limits, deadlines, HTTP errors, cancel, close(), and none with user interceptors", async () => {
    const listener = await listen(false);
    const small = agent(listener.url(), { readMaxBytes: 1000, sendCompression: null });
    const tooBig = rawCall(small, "Echo", EchoRequestSchema, EchoResponseSchema, { payload: new Uint8Array(5000) });
    expect((await rejection(collect(tooBig))).code).to.equal(Code.ResourceExhausted);
    const [ok] = await collect(rawCall(small, "Echo", EchoRequestSchema, EchoResponseSchema, { payload: new Uint8Array(10) }));
    expect(ok.payload.length).to.equal(10);

    const observed: EchoObservations = {};
    const timed = agent((await listen(false, observed)).url(), { defaultTimeoutMs: 200 });
    const hung = rawCall(timed, "ServerStream", ServerStreamRequestSchema, ServerStreamResponseSchema, { count: 0 });
    expect((await rejection(hung.next())).code).to.equal(Code.DeadlineExceeded);
    expect(observed.lastHeaders?.get("grpc-timeout")).to.equal("200m");

    const t = agent(listener.url());
    const stream = t.grpcStream!("/no.Such/Method", { encode: (b: Uint8Array) => b, decode: (b) => b });
    stream.closeSend();
    expect((await rejection(stream.next())).code).to.equal(Code.Unimplemented);

    const cancelled = rawCall(t, "ServerStream", ServerStreamRequestSchema, ServerStreamResponseSchema, { count: 0 });
    const next = rejection(cancelled.next());
    cancelled.cancel(new ConnectError("stop", Code.Canceled));
    expect((await next).rawMessage).to.equal("stop");

    const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
    const inFlight = rejection(rawCall(timed, "ServerStream", ServerStreamRequestSchema, ServerStreamResponseSchema, { count: 0 }).next());
    await within(HUNG_MS, started, "stream start");
    timed.close();
    expect((await inFlight).code).to.equal(Code.Canceled);
    expect((await rejection(rawCall(timed, "Echo", EchoRequestSchema, EchoResponseSchema, {}).next())).code).to.equal(Code.Canceled);

    const intercepted = agent(listener.url(), { interceptors: [(next) => (req) => next(req)] });
    expect(intercepted.grpcStream).to.equal(undefined);
  });

  it("raw streams: a cancel resets the stream only after the message in flight has gone out whole", async () => {
    // KAS's window (1,000 bytes, KAS not reading) holds the message back; a reset sent meanwhile
    // would reach KAS as a truncated message instead of a cancel.
    const { streams: kasStreams, tap } = await tappedGrpcServer(cleanup, { initialWindowSize: 1000 });
    const t = agent(`grpc://127.0.0.1:${tap.port}`, { sendCompression: null });
    const call = t.grpcStream!("/x.Y/Z", { encode: (b: Uint8Array) => b, decode: (b) => b });
    void call.send(new Uint8Array(100_000).fill(9)).catch(() => {});
    await waitFor(() => kasStreams.length === 1 && tap.toServer.stream(kasStreams[0]!.id!).partial, undefined, "KAS's window to stop the message");
    const next = rejection(call.next());
    call.cancel(new ConnectError("stop", Code.Canceled));
    expect((await next).code).to.equal(Code.Canceled);
    expect(kasStreams[0]!.closed).to.equal(false);
    kasStreams[0]!.resume();
    const received = tap.toServer.stream(kasStreams[0]!.id!);
    await waitFor(() => received.reset !== undefined, undefined, "the reset");
    // (Node ends a client's side with END_STREAM before its RST_STREAM.)
    expect(received.reset).to.deep.equal({ code: http2.constants.NGHTTP2_CANCEL, messages: 1, partial: false });
    expect(received.messages[0]!.byteLength).to.equal(100_000);
  });

  it("close() cancels in-flight calls and refuses new ones", async () => {
    const observed: EchoObservations = {};
    const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
    const listener = await listen(false, observed);
    const t = agent(listener.url("ws"));
    const client = createClient(EchoService, t.transport);
    const call = rejection(client.serverStream({ count: 0 })[Symbol.asyncIterator]().next());
    await within(HUNG_MS, started, "stream start");
    expect(t.state()).to.equal("open");
    t.close();
    t.close();
    expect((await call).code).to.equal(Code.Canceled);
    expect((await rejection(client.echo({}))).code).to.equal(Code.Canceled);
    expect(t.state()).to.equal("closed");
    await waitFor(() => listener.sessions.size === 0, HUNG_MS, "server-side session close");
  });

  it("keeps an idle connection alive with PINGs the server does not mind", async () => {
    const idleMs = 1000;
    // The listener's idle rule (no open stream) would close it regardless of PINGs: off here.
    const listener = await createAgentApiListener({ handler: echoHandler(), port: 0, idleTimeoutMs: 0 });
    cleanup.add(() => listener.close(0));
    const t = agent(listener.url(), { pingIntervalMs: 100 });
    const client = createClient(EchoService, t.transport);
    await client.echo({});
    const session = [...listener.sessions.keys()][0]!;
    let pings = 0;
    session.on("ping", () => pings++);
    // PINGs 100 ms apart for a while (2 s), and no other traffic.
    await waitFor(() => pings >= (2 * idleMs) / 100 || session.closed, HUNG_MS, "the agent's PINGs");
    expect([...listener.sessions.keys()]).to.deep.equal([session]);
    await client.echo({});
  });
});
