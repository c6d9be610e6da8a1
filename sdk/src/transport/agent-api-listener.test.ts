import { expect } from "chai";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { WebSocket } from "ws";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema, EchoResponseSchema, EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { rawHttp2Request } from "../grpc/raw-http2.test-support.js";
import { FrameReader, encodeFrame } from "../grpc/grpc-frames.js";
import type { AgentApiListener, AgentApiSessionInfo } from "./agent-api-listener.js";
import { createAgentApiListener } from "./agent-api-listener.js";
import type { AgentApiListenerOptions } from "./agent-api-listener-options.js";
import { createAgentTransport, type AgentTransport } from "./agent-transport.js";
import { setTimeout as sleep } from "node:timers/promises";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen as listenOn } from "@kasbridge/testing/servers";
import { tcpProxy } from "@kasbridge/testing/tcp-proxy";
import { selfSignedCertificate } from "@kasbridge/testing/tls";
import { HUNG_MS, deferred, rejection, waitFor, within } from "@kasbridge/testing/wait";
import { type EchoObservations, echoHandler, trackResources } from "./fixtures.test-support.js";
import { HTTP2_PREFACE } from "./protocol-sniffer.js";
import { WS_TUNNEL_SUBPROTOCOL } from "./websocket-tunnel.js";

/**
 * Bound on waits for the listener to drop a misbehaving connection: generous next to the 200-300 ms
 * timeouts these tests configure, and below the defaults (10 s and more) that would drop it too.
 */
const DROP_MS = 5000;

/** Resolves when the socket has closed; rejects if that takes longer than ms. */
function closedWithin(socket: net.Socket, ms: number, what: string): Promise<void> {
  return within(ms, new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once("close", () => resolve()))), what);
}

/** Everything the server sends until it closes the connection. */
function readAll(socket: net.Socket): Promise<string> {
  let text = "";
  socket.on("data", (d: Buffer) => (text += d.toString()));
  return new Promise((resolve) => socket.once("close", () => resolve(text)));
}

function rawConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
    socket.once("error", reject);
    socket.on("data", () => {}); // drain whatever the server answers
  });
}

const echoPath = "/kasbridge.echo.v1.EchoService/Echo";
const payload = new Uint8Array([4, 5, 6]);

describe("transport/agent-api-listener", function () {
  this.timeout(20_000);
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  async function listen(options: Partial<AgentApiListenerOptions> = {}, observed?: EchoObservations): Promise<AgentApiListener> {
    const listener = await createAgentApiListener({ handler: echoHandler(observed), port: 0, ...options });
    return cleanup.add(() => listener.close(0), listener);
  }

  function agent(url: string, ca?: string): AgentTransport {
    const t = createAgentTransport({ url, ca });
    return cleanup.add(() => t.close(), t);
  }

  it("binds port 0 and reports its address and URLs", async () => {
    const listener = await listen();
    expect(listener.address.host).to.equal("127.0.0.1");
    expect(listener.address.port).to.be.greaterThan(0);
    expect(listener.url()).to.equal(`grpc://127.0.0.1:${listener.address.port}`);
    expect(listener.url("ws", "/-/kubernetes-agent/")).to.equal(`ws://127.0.0.1:${listener.address.port}/-/kubernetes-agent/`);
    const secure = await listen({ tls: selfSignedCertificate(), host: "::1" });
    expect(secure.url()).to.equal(`grpcs://[::1]:${secure.address.port}`);
  });

  it("serves Connect and gRPC-Web over HTTP/1.1 on the cleartext port next to gRPC over h2c", async () => {
    const listener = await listen();
    const connect = createClient(EchoService, createConnectTransport({ httpVersion: "1.1", baseUrl: listener.url("http") }));
    const grpcWeb = createClient(EchoService, createGrpcWebTransport({ httpVersion: "1.1", baseUrl: listener.url("http") }));
    const grpc = createClient(EchoService, agent(listener.url()).transport);
    const payload = new Uint8Array([1, 2, 3]);
    expect((await connect.echo({ payload })).payload).to.deep.equal(payload);
    expect((await grpcWeb.echo({ payload })).payload).to.deep.equal(payload);
    expect((await grpc.echo({ payload })).payload).to.deep.equal(payload);
    let n = 0;
    for await (const m of grpcWeb.serverStream({ count: 3, size: 10 })) n += m.payload.length;
    expect(n).to.equal(30);
    const err = await rejection(connect.fail({ code: Code.NotFound, message: "nope" }));
    expect(err.code).to.equal(Code.NotFound);
  });

  it("keeps every byte of a preface that arrives in pieces", async () => {
    const listener = await listen();
    // A proxy that forwards the client's first 64 bytes 3 at a time, 2 ms
    // apart: the preface (24 bytes) and SETTINGS straddle many TCP segments.
    const proxy = net.createServer((a) => {
      const b = net.connect(listener.address.port, "127.0.0.1");
      b.setNoDelay(true);
      let sent = 0;
      let chain = Promise.resolve();
      a.on("data", (d: Buffer) => {
        chain = chain.then(async () => {
          for (let i = 0; i < d.length; ) {
            const n = sent < 64 ? 3 : d.length - i;
            b.write(d.subarray(i, i + n));
            sent += n;
            i += n;
            if (sent <= 64) await sleep(2);
          }
        });
      });
      b.pipe(a);
      for (const s of [a, b]) s.on("error", () => {}).on("close", () => (s === a ? b : a).destroy());
    });
    const proxyPort = await listenOn(proxy);
    cleanup.add(() => closeServer(proxy));
    const t = agent(`grpc://127.0.0.1:${proxyPort}`);
    const payload = new Uint8Array([4, 5, 6]);
    expect((await createClient(EchoService, t.transport).echo({ payload })).payload).to.deep.equal(payload);
    expect([...listener.sessions.values()].map((i) => i.transport)).to.deep.equal(["h2c"]);
    t.close();
  });

  it("chooses HTTP/2 or HTTP/1.1 by ALPN on the TLS port", async () => {
    const cert = selfSignedCertificate();
    const listener = await listen({ tls: cert });
    const baseUrl = listener.url("https");
    const h1 = createClient(EchoService, createConnectTransport({ httpVersion: "1.1", baseUrl, nodeOptions: { ca: cert.cert } }));
    const h2 = createClient(EchoService, createConnectTransport({ httpVersion: "2", baseUrl, nodeOptions: { ca: cert.cert } }));
    expect((await h1.echo({ payload: new Uint8Array([1]) })).payload).to.deep.equal(new Uint8Array([1]));
    expect((await h2.echo({ payload: new Uint8Array([2]) })).payload).to.deep.equal(new Uint8Array([2]));
    expect([...listener.sessions.values()].map((i) => i.transport)).to.deep.equal(["h2"]);
  });

  it("refuses a WebSocket without the ws-tunnel subprotocol, and other upgrades, with 400", async () => {
    const listener = await listen();
    for (const protocols of [[], ["graphql-ws"]]) {
      const status = await new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(listener.url("ws", "/any/path"), protocols);
        ws.once("unexpected-response", (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.once("open", () => reject(new Error("WebSocket without ws-tunnel was accepted")));
        ws.on("error", () => {});
      });
      expect(status).to.equal(400);
    }
    const socket = cleanup.track(await rawConnect(listener.address.port));
    const answer = new Promise<string>((resolve) => socket.once("data", (d: Buffer) => resolve(d.toString())));
    socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    expect(await answer).to.match(/^HTTP\/1\.1 400 /);
    await closedWithin(socket, DROP_MS, "refused upgrade");
    expect(listener.sessions.size).to.equal(0);
  });

  it("closes a ws-tunnel that sends a text frame", async () => {
    const listener = await listen();
    const ws = new WebSocket(listener.url("ws"), [WS_TUNNEL_SUBPROTOCOL]);
    cleanup.add(() => ws.terminate(), ws);
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    expect(ws.protocol).to.equal(WS_TUNNEL_SUBPROTOCOL);
    await within(HUNG_MS, new Promise((resolve) => (listener.sessions.size > 0 ? resolve(0) : listener.onSessionOpen(resolve))), "session");
    const closed = new Promise((resolve) => ws.once("close", resolve));
    ws.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); // the right bytes, the wrong frame type
    await within(HUNG_MS, closed, "tunnel close");
    await within(HUNG_MS, new Promise((resolve) => (listener.sessions.size === 0 ? resolve(0) : listener.onSessionClose(resolve))), "session close");
  });

  it("gives the stream handler first pick of HTTP/2 streams; the streams it declines reach the request handler", async () => {
    const handled: string[] = [];
    const listener = await listen({
      handler: (req, res) => {
        handled.push(`handler ${req.url} ${req instanceof http2.Http2ServerRequest}`);
        res.writeHead(200, { "x-from": "handler" });
        res.end();
      },
      streamHandler: (stream, headers) => {
        if (headers[":path"] !== "/raw") return false;
        handled.push("stream handler /raw");
        stream.respond({ ":status": 200, "x-from": "stream-handler" }, { endStream: true });
        return true;
      },
    });
    const session = cleanup.track(http2.connect(listener.url("http")));
    const get = (path: string) =>
      new Promise<string>((resolve, reject) => {
        const req = session.request({ ":path": path });
        req.on("response", (headers) => resolve(String(headers["x-from"])));
        req.on("error", reject);
        req.resume();
        req.end();
      });
    expect(await get("/raw")).to.equal("stream-handler");
    expect(await get("/other")).to.equal("handler");
    expect(handled).to.deep.equal(["stream handler /raw", "handler /other true"]);
  });

  describe("any request, however odd", () => {

    it("serves gRPC whose :authority is agentk's percent-encoded ws:// dial target, as grpc-go does", async () => {
      const listener = await listen();
      const answer = await rawHttp2Request(
        listener.url("http"),
        { ":method": "POST", ":path": echoPath, ":authority": "ws:%2F%2F127.0.0.1:8150", "content-type": "application/grpc", te: "trailers" },
        encodeFrame(toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload }))),
      );
      expect(answer.grpcStatus).to.equal("0");
      const [message] = new FrameReader(1 << 20).push(answer.body);
      expect(fromBinary(EchoResponseSchema, message).payload).to.deep.equal(payload);
    });

    it("serves Connect over HTTP/1.1 whose Host is not a host name, and HTTP/1.0 without one", async () => {
      const listener = await listen();
      const body = JSON.stringify({ payload: Buffer.from(payload).toString("base64") });
      for (const head of [`POST ${echoPath} HTTP/1.1\r\nHost: wss:%2F%2Fkas.example.com`, `POST ${echoPath} HTTP/1.0`]) {
        const socket = cleanup.track(await rawConnect(listener.address.port));
        const answer = readAll(socket);
        socket.end(`${head}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        const text = await within(HUNG_MS, answer, "the answer");
        expect(text, head).to.match(/^HTTP\/1\.[01] 200 /);
        expect(text, head).to.include(Buffer.from(payload).toString("base64"));
      }
    });

    it("answers a request its handler throws on with an error on that stream alone", async () => {
      const listener = await listen({
        handler: (req, res) => {
          if (req.url === "/throw") throw new Error("handler bug");
          res.writeHead(200).end("fine");
        },
      });
      const session = cleanup.track(http2.connect(listener.url("http")));
      const grpc = await rawHttp2Request(session, { ":method": "POST", ":path": "/throw", "content-type": "application/grpc" });
      expect(grpc.grpcStatus).to.equal(String(Code.Internal));
      const plain = await rawHttp2Request(session, { ":method": "GET", ":path": "/throw" });
      expect(plain.headers?.[":status"]).to.equal(500);
      const fine = await rawHttp2Request(session, { ":method": "GET", ":path": "/fine" });
      expect(fine.body.toString()).to.equal("fine");
    });

    it("resets a stream its stream handler throws on, and serves the session's next stream", async () => {
      const listener = await listen({
        handler: (_req, res) => res.writeHead(200).end("fine"),
        streamHandler: (_stream, headers) => {
          if (headers[":path"] === "/throw") throw new Error("stream handler bug");
          return false;
        },
      });
      const session = cleanup.track(http2.connect(listener.url("http")));
      const thrown = await rawHttp2Request(session, { ":method": "POST", ":path": "/throw" });
      expect(thrown.rstCode).to.equal(http2.constants.NGHTTP2_INTERNAL_ERROR);
      expect((await rawHttp2Request(session, { ":path": "/fine" })).body.toString()).to.equal("fine");
    });
  });

  it("reports sessions with their transport; req.stream.session is the tunnel's session", async () => {
    const observed: EchoObservations = {};
    const listener = await listen({}, observed);
    const opened: Array<[http2.ServerHttp2Session, AgentApiSessionInfo]> = [];
    const closed: AgentApiSessionInfo[] = [];
    listener.onSessionOpen((s, i) => opened.push([s, i]));
    const unsubscribe = listener.onSessionClose((_s, i) => closed.push(i));

    const t = createAgentTransport({ url: listener.url("ws", "/agent"), headers: { "x-kas-header": "v1" } });
    await createClient(EchoService, t.transport).echo({});
    expect(opened).to.have.length(1);
    const [session, info] = opened[0]!;
    expect(info.transport).to.equal("ws");
    expect(info.remoteAddress).to.equal("127.0.0.1");
    expect(info.webSocketHandshake?.path).to.equal("/agent");
    expect(info.webSocketHandshake?.headers["x-kas-header"]).to.equal("v1");
    expect(observed.lastSession).to.equal(session);
    expect(listener.sessionInfo(observed.lastSession)).to.equal(info);

    const h2c = agent(listener.url());
    await createClient(EchoService, h2c.transport).echo({});
    expect(opened.map(([, i]) => i.transport)).to.deep.equal(["ws", "h2c"]);
    expect(listener.sessionInfo(observed.lastSession)?.transport).to.equal("h2c");
    expect(opened[1]![1].id).to.not.equal(info.id);

    t.close();
    await waitFor(() => closed.length > 0, HUNG_MS, "session close");
    expect(closed[0]).to.equal(info);
    unsubscribe();
    expect(listener.sessions.size).to.equal(1);
  });

  describe("with misbehaving peers", () => {
    let listener: AgentApiListener;
    let healthy: { send: (b: Uint8Array) => Promise<Uint8Array>; done: () => Promise<void> };

    beforeEach(async () => {
      listener = await listen({ keepalivePingIntervalMs: 200, keepalivePingTimeoutMs: 200, protocolDetectionTimeoutMs: 300 });
      // A bidi stream held open across the whole test: misbehaving peers
      // must not disturb it.
      const client = createClient(EchoService, agent(listener.url()).transport);
      const queue: Uint8Array[] = [];
      let wake: (() => void) | undefined;
      let ended = false;
      const requests = (async function* () {
        for (;;) {
          while (queue.length > 0) yield { payload: queue.shift()! };
          if (ended) return;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      })();
      const responses = client.bidi(requests)[Symbol.asyncIterator]();
      healthy = {
        async send(payload) {
          queue.push(payload);
          wake?.();
          const r = await within(HUNG_MS, responses.next(), "healthy echo");
          if (r.done) throw new Error("healthy stream ended");
          return r.value.payload;
        },
        async done() {
          ended = true;
          wake?.();
          expect((await responses.next()).done).to.equal(true);
        },
      };
      expect(await healthy.send(new Uint8Array([1]))).to.deep.equal(new Uint8Array([1]));
    });

    afterEach(async () => {
      expect(await healthy.send(new Uint8Array([9]))).to.deep.equal(new Uint8Array([9]));
      await healthy.done();
    });

    it("answers garbage bytes with 400 and hangs up", async () => {
      const socket = cleanup.track(await rawConnect(listener.address.port));
      socket.write(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a, 0x16, 0x03]));
      await closedWithin(socket, DROP_MS, "garbage connection");
    });

    it("hangs up on a bad HTTP/2 preface", async () => {
      const socket = cleanup.track(await rawConnect(listener.address.port));
      socket.write("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
      await closedWithin(socket, DROP_MS, "bad preface connection");
    });

    it("closes an HTTP/2 session that sends garbage frames after the preface", async () => {
      const socket = cleanup.track(await rawConnect(listener.address.port));
      socket.write(Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 4, 0xfe, 0, 0, 0, 0, 1, 1, 2, 3, 4]), Buffer.alloc(100, 0xaa)]));
      await closedWithin(socket, DROP_MS, "garbage HTTP/2 session");
    });

    it("closes a ws-tunnel whose binary frames are not HTTP/2", async () => {
      const ws: WebSocket = new WebSocket(listener.url("ws"), [WS_TUNNEL_SUBPROTOCOL]);
      cleanup.add(() => ws.terminate(), ws);
      await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
      const closed = new Promise((resolve) => ws.once("close", resolve));
      ws.send(Buffer.alloc(4096, 0x5a));
      await within(HUNG_MS, closed, "tunnel close");
    });

    it("drops a half-open HTTP/2 session that never answers PINGs", async () => {
      const socket = cleanup.track(await rawConnect(listener.address.port));
      socket.write(HTTP2_PREFACE); // and no SETTINGS, no PING ACK, nothing
      await closedWithin(socket, DROP_MS, "half-open session");
    });

    it("closes a connection that never says anything", async () => {
      const socket = cleanup.track(await rawConnect(listener.address.port));
      await closedWithin(socket, DROP_MS, "silent connection");
    });

    it("rejects huge HTTP/1.1 headers with 431", async () => {
      const socket = cleanup.track(await rawConnect(listener.address.port));
      const answer = new Promise<string>((resolve) => socket.once("data", (d: Buffer) => resolve(d.toString())));
      socket.write(`POST /x HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(200_000)}\r\n\r\n`);
      expect(await within(HUNG_MS, answer, "431")).to.match(/^HTTP\/1\.1 431 /);
      await closedWithin(socket, DROP_MS, "huge header connection");
    });

    it("fails an HTTP/2 request with huge headers without harming the session's peers", async () => {
      const client = http2.connect(listener.url("http"));
      cleanup.track(client);
      client.on("error", () => {});
      const stream = client.request({
        ":method": "POST",
        ":path": "/kasbridge.echo.v1.EchoService/Echo",
        "content-type": "application/grpc",
        "x-big": "a".repeat(200_000),
      });
      stream.on("error", () => {});
      stream.end();
      const rstCode = await within(HUNG_MS, new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? -1))), "stream close");
      expect(rstCode).to.not.equal(http2.constants.NGHTTP2_NO_ERROR);
    });

    it("survives a raw HTTP/2 client that opens streams and vanishes", async () => {
      const client = http2.connect(listener.url("http"));
      client.on("error", () => {});
      for (let i = 0; i < 20; i++) {
        const s = client.request({ ":method": "POST", ":path": "/kasbridge.echo.v1.EchoService/Bidi", "content-type": "application/grpc" });
        s.on("error", () => {});
        s.write(Buffer.from([0, 0, 0, 0, 3, 1, 2]));
      }
      // The server answers a PING after it has read every frame sent before it (or has hung up).
      await new Promise((resolve) => client.ping(resolve));
      client.destroy();
      // Only the healthy stream's session is left once the server has seen this one go.
      await waitFor(() => listener.sessions.size === 1, HUNG_MS, "the vanished session to close");
    });
  });

  it("closes a TLS connection that neither completes a handshake nor speaks TLS", async () => {
    const listener = await listen({ tls: selfSignedCertificate(), protocolDetectionTimeoutMs: 200 });
    const silent = cleanup.track(await rawConnect(listener.address.port));
    const plain = cleanup.track(await rawConnect(listener.address.port));
    plain.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await closedWithin(plain, DROP_MS, "plaintext on TLS port");
    await closedWithin(silent, DROP_MS, "silent TLS connection");
  });

  it("drops an agent that stopped answering PINGs and reports the session closed", async () => {
    const listener = await listen({ keepalivePingIntervalMs: 100, keepalivePingTimeoutMs: 100 });
    const proxy = await tcpProxy(listener.address.port);
    cleanup.add(() => proxy.close(), proxy);
    const closed = new Promise<AgentApiSessionInfo>((resolve) => listener.onSessionClose((_s, i) => resolve(i)));
    const client = cleanup.track(http2.connect(`http://127.0.0.1:${proxy.port}`));
    client.on("error", () => {});
    await new Promise((resolve) => client.once("remoteSettings", resolve));
    expect(listener.sessions.size).to.equal(1);
    proxy.frozen = true; // the agent hangs: PINGs go unanswered
    expect((await within(HUNG_MS, closed, "session close")).transport).to.equal("h2c");
  });

  it("closes sessions without an open stream, PINGs or not, and never one with an open stream, however silent", async () => {
    const idleMs = 300;
    const release = deferred();
    const observed: EchoObservations = { holdStream: release.promise };
    const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
    const listener = await listen({ idleTimeoutMs: idleMs, headersTimeoutMs: idleMs }, observed);
    const goaway = (session: http2.ClientHttp2Session) => within(HUNG_MS, new Promise((resolve) => session.once("goaway", resolve)), "GOAWAY");
    // A call whose stream stays open, sending nothing, for several idle periods.
    const t = agent(listener.url());
    const received: number[] = [];
    const call = (async () => {
      for await (const m of createClient(EchoService, t.transport).serverStream({ count: 1, size: 1 })) received.push(m.index);
    })();
    await within(HUNG_MS, started, "the held call to start");
    const busy = [...listener.sessions.keys()][0]!;
    // Opened a stream once, then only pings: closed after idleTimeoutMs.
    const pinging = cleanup.track(http2.connect(listener.url("http")));
    pinging.on("error", () => {});
    const request = encodeFrame(toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload })));
    expect((await rawHttp2Request(pinging, { ":method": "POST", ":path": echoPath, "content-type": "application/grpc" }, request)).grpcStatus).to.equal("0");
    const pingingGone = goaway(pinging);
    const ping = (): void => {
      if (!pinging.destroyed && !pinging.closed) pinging.ping(() => setTimeout(ping, 50));
    };
    ping();
    await pingingGone;
    // Sessions that never open a stream, one after the other, each closed after headersTimeoutMs:
    // the clock of several idle periods, through which the busy session stays.
    for (let i = 0; i < 3; i++) await goaway(cleanup.track(http2.connect(listener.url("http"))));
    expect(busy.closed || busy.destroyed, "the session with an open stream").to.equal(false);
    release.resolve();
    await within(HUNG_MS, call, "the held call to finish");
    expect(received).to.deep.equal([0]);
  });

  it("closes a connection that opens no stream, or sends no complete HTTP/1.1 head, within headersTimeoutMs", async () => {
    const listener = await listen({ headersTimeoutMs: 300, idleTimeoutMs: 600_000 });
    const silent = cleanup.track(http2.connect(listener.url("http")));
    silent.on("error", () => {});
    const slowloris = cleanup.track(await rawConnect(listener.address.port));
    const answer = readAll(slowloris);
    slowloris.write("POST /kasbridge.echo.v1.EchoService/Echo HTTP/1.1\r\nHost: kas\r\nX-Slow: ");
    await within(HUNG_MS, new Promise((resolve) => silent.once("goaway", resolve)), "GOAWAY for the HTTP/2 session without a stream");
    expect(await within(HUNG_MS, answer, "the HTTP/1.1 connection without a complete head to close")).to.match(/^HTTP\/1\.1 408 /);
  });

  it("sends GOAWAY when a connection reaches its maximum age", async () => {
    const listener = await listen({ maxConnectionAgeMs: 200, maxConnectionAgeGraceMs: 200 });
    const client = http2.connect(listener.url("http"));
    cleanup.track(client);
    const goaway = await within(HUNG_MS, new Promise<number>((resolve) => client.once("goaway", resolve)), "GOAWAY");
    expect(goaway).to.equal(http2.constants.NGHTTP2_NO_ERROR);
  });

  it("refuses connections beyond maxConnections", async () => {
    const listener = await listen({ maxConnections: 1 });
    const t = agent(listener.url());
    await createClient(EchoService, t.transport).echo({});
    const extra = cleanup.track(net.connect(listener.address.port, "127.0.0.1"));
    extra.on("error", () => {});
    await closedWithin(extra, DROP_MS, "connection over the limit");
    await createClient(EchoService, t.transport).echo({});
  });

  describe("close()", () => {
    for (const [scheme, secure] of [["grpc", false], ["ws", false], ["grpcs", true], ["wss", true]] as const) {
      it(`ends streams still open after the grace period (${scheme}) and leaves no handles`, async () => {
        // Timers are left to trackResources: mocha's own one comes and goes.
        const activeHandles = (): string[] => process.getActiveResourcesInfo().filter((r) => r.startsWith("TCP")).sort();
        const before = activeHandles();
        const resources = trackResources();
        cleanup.add(() => resources.stop(), resources);
        const cert = selfSignedCertificate();
        const observed: EchoObservations = {};
        const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
        const listener = await createAgentApiListener({ handler: echoHandler(observed), port: 0, tls: secure ? cert : undefined });
        const t = createAgentTransport({ url: listener.url(scheme), ca: cert.cert });
        const client = createClient(EchoService, t.transport);
        const first = rejection(client.serverStream({ count: 0 })[Symbol.asyncIterator]().next());
        await within(HUNG_MS, started, "stream start");
        await within(HUNG_MS, listener.close(200), "close");
        const err = await first;
        expect(err.code).to.equal(Code.Unavailable);
        expect(listener.sessions.size).to.equal(0);
        // Refuses new connections now.
        expect((await rejection(client.echo({}))).code).to.equal(Code.Unavailable);
        t.close();
        await listener.close(); // idempotent
        // Destroy hooks run from the immediate queue, after the timer that waits for them (which
        // trackResources counts too); compare afterwards for a readable failure.
        for (const deadline = Date.now() + HUNG_MS; Date.now() < deadline; ) {
          await sleep(20);
          await new Promise((resolve) => setImmediate(resolve));
          if (resources.live().length === 0 && activeHandles().join() === before.join()) break;
        }
        expect(resources.live()).to.deep.equal([]);
        expect(activeHandles()).to.deep.equal(before);
      });
    }

    it("closes idle HTTP/1.1 keep-alive connections at once", async () => {
      const listener = await listen();
      const agentH1 = new http.Agent({ keepAlive: true });
      cleanup.add(() => agentH1.destroy(), agentH1);
      const connect = createClient(
        EchoService,
        createConnectTransport({ httpVersion: "1.1", baseUrl: listener.url("http"), nodeOptions: { agent: agentH1 } }),
      );
      await connect.echo({});
      // A grace period longer than the test may run: close() ends only if it does not wait for idle connections.
      await within(HUNG_MS, listener.close(600_000), "close");
    });

    it("lets calls finish within the grace period and sends GOAWAY to idle sessions", async () => {
      const release = deferred();
      const observed: EchoObservations = { holdStream: release.promise };
      const started = new Promise<void>((resolve) => (observed.streamStarted = resolve));
      const listener = await listen({}, observed);
      const idle = http2.connect(listener.url("http"));
      cleanup.track(idle);
      idle.on("error", () => {});
      await new Promise((resolve) => idle.once("remoteSettings", resolve));
      const goaway = new Promise((resolve) => idle.once("goaway", resolve));
      const t = agent(listener.url());
      const client = createClient(EchoService, t.transport);
      const received: number[] = [];
      const call = (async () => {
        for await (const m of client.serverStream({ count: 5, size: 1 })) received.push(m.index);
      })();
      await within(HUNG_MS, started, "stream start");
      let closed = false;
      const closing = listener.close(600_000).then(() => (closed = true));
      await within(HUNG_MS, goaway, "GOAWAY");
      // The call is still running (its handler waits for `release`): the listener waits for it.
      expect(closed).to.equal(false);
      release.resolve();
      await within(HUNG_MS, call, "the call to finish");
      expect(received).to.deep.equal([0, 1, 2, 3, 4]);
      await within(HUNG_MS, closing, "close after the last call");
    });
  });
});
