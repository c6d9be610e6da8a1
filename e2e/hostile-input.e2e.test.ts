// Hostile input on every listener of a real `kas` over real sockets: odd pseudo-headers, header
// names and values no client library sends, malformed and truncated frames, gRPC length prefixes
// that lie, compression bombs, HTTP/1.1 smuggling, WebSocket garbage, connections that never
// finish. Each request must get a clean answer on its own stream (an HTTP status, a gRPC status,
// a reset) or its connection closed, and the process must stay up with nothing uncaught. Then the
// same kas must still serve agents: a new agentk registers, gets its configuration and serves a
// tunnel call, and the agentk connected before the storm still serves one too.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { expect } from "chai";
import { WebSocket } from "ws";
import { decodeSecret } from "@kasbridge/sdk/auth";
import { AgentRegistrar, RegisterRequestSchema } from "@kasbridge/sdk/gen/gitlab/agent/agent_registrar/rpc/rpc_pb";
import { ReverseTunnel } from "@kasbridge/sdk/gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb";
import { EchoRequestSchema, EchoService } from "@kasbridge/sdk/gen/kasbridge/echo/v1/echo_pb";
import { internalApiClientInterceptor, privateApiClientInterceptor } from "@kasbridge/sdk/kas";
import { WS_TUNNEL_SUBPROTOCOL } from "@kasbridge/sdk/transport";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { HUNG_MS, waitFor, within } from "@kasbridge/testing/wait";
import { encodeHeaderBlock, encodeHttp2Frame, frameFlag, frameType } from "../sdk/src/grpc/http2-frames.test-support.js";
import { connectSocket, rawHttp2Request, sendRawHttp2, type RawHttp2Answer, type RawHttp2Target } from "../sdk/src/grpc/raw-http2.test-support.js";
import { expectSilentHttp2SessionClosed, expectSlowHeadClosed } from "../sdk/src/transport/listener-limits.test-support.js";
import { api, createAgentWithToken, echoClient, startAgentk, startKas, type KasProcess } from "./harness.test-support.js";

const registerPath = `/${AgentRegistrar.typeName}/${AgentRegistrar.method.register.name}`;
const tunnelPath = `/${ReverseTunnel.typeName}/${ReverseTunnel.method.connect.name}`;
const echoPath = `/${EchoService.typeName}/${EchoService.method.echo.name}`;
const { DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION } = frameType;
const { END_STREAM, END_HEADERS } = frameFlag;

/** A gRPC length-prefixed message: `flags`, the declared length (the truth unless given), the bytes. */
function grpcFrame(bytes: Uint8Array, options: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = options.compressed ? 1 : 0;
  head.writeUInt32BE(options.declaredLength ?? bytes.byteLength, 1);
  return Buffer.concat([head, bytes]);
}

/** A gzip bomb: `mib` MiB of zeros, compressed (about a thousandth of that). */
function gzipBomb(mib: number): Buffer {
  return gzipSync(Buffer.alloc(mib * 1024 * 1024));
}

/** Request headers of a raw HEADERS frame for `path`. */
function requestBlock(target: RawHttp2Target, path: string, extra: Array<[string, string]> = []): Buffer {
  return encodeHeaderBlock([
    [":method", "POST"],
    [":scheme", target.tls ? "https" : "http"],
    [":authority", "kas"],
    [":path", path],
    ["content-type", "application/grpc"],
    ...extra,
  ]);
}

function headersFrame(id: number, block: Buffer, flags: number = END_HEADERS): Buffer {
  return encodeHttp2Frame(HEADERS, flags, id, block);
}

/** One HTTP/1.1 exchange on a new connection: the status line's code, or undefined if it closed without one. */
async function http1(target: RawHttp2Target, request: string | Buffer): Promise<number | undefined> {
  const socket = await connectSocket(target, ["http/1.1"]);
  try {
    let text = "";
    const head = new Promise<number | undefined>((resolve) => {
      socket.on("data", (d: Buffer) => {
        text += d.toString("latin1");
        const match = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
        if (match && text.includes("\r\n\r\n")) resolve(Number(match[1]));
      });
      socket.once("close", () => resolve(/^HTTP\/1\.[01] (\d{3}) /.exec(text) ? Number(text.slice(9, 12)) : undefined));
    });
    socket.write(request);
    return await within(HUNG_MS, head, `an answer to ${JSON.stringify(String(request).slice(0, 60))}`);
  } finally {
    socket.destroy();
  }
}

/** An answer on its own stream: a status (HTTP or gRPC) or a reset; never a hang. */
function expectAnswered(answer: RawHttp2Answer, what: string): void {
  const answered = answer.headers?.[":status"] !== undefined || answer.rstCode !== 0;
  expect(answered, `${what}: neither an answer nor a reset`).to.equal(true);
}

for (const withTls of [false, true]) {
  describe(`e2e: hostile input on every listener of a real kas (${withTls ? "TLS" : "cleartext"})`, function () {
    this.timeout(180_000);
    const cleanups = new Cleanup();
    let kas: Awaited<ReturnType<typeof startKas>>;
    let agentA: Awaited<ReturnType<typeof createAgentWithToken>>;
    let agentkArgs: string[] = [];
    let agent: RawHttp2Target;
    let internal: RawHttp2Target;
    let privateApi: RawHttp2Target;
    let k8sProxy: RawHttp2Target;
    let platform: RawHttp2Target;
    let observability: RawHttp2Target;
    let privateSecret: Uint8Array;

    const target = (url: string, secure = false): RawHttp2Target => {
      const u = new URL(url.replace(/^grpcs?:/, "http:"));
      return { port: Number(u.port), host: u.hostname.replace(/^\[|\]$/g, ""), tls: secure };
    };
    const urlOf = (t: RawHttp2Target) => `${t.tls ? "https" : "http"}://${t.host}:${t.port}`;
    /** An HTTP/2 session to `t`, closed at cleanup. */
    const session = (t: RawHttp2Target) => {
      const s = cleanups.track(http2.connect(urlOf(t), { rejectUnauthorized: false }));
      s.on("error", () => {});
      return s;
    };

    before(async () => {
      const env: Record<string, string> = {};
      // Short head timeouts, so connections that never finish are seen closed quickly; short idle
      // timeouts, which must not cut the agent's tunnels (open streams) all the while.
      for (const listener of ["AGENT", "K8S_PROXY", "INTERNAL", "PRIVATE", "PLATFORM", "OBSERVABILITY"]) {
        env[`KAS_${listener}_HEADERS_TIMEOUT_SECONDS`] = "1";
        env[`KAS_${listener}_IDLE_TIMEOUT_SECONDS`] = "2";
      }
      if (withTls) {
        const dir = mkdtempSync(join(tmpdir(), "kas-hostile-tls-"));
        cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
        const { certFile, keyFile } = selfSignedCertificateFiles(dir, "tls");
        Object.assign(env, { KAS_AGENT_TLS_CERT_FILE: certFile, KAS_AGENT_TLS_KEY_FILE: keyFile, KAS_PRIVATE_TLS_CERT_FILE: certFile, KAS_PRIVATE_TLS_KEY_FILE: keyFile });
        agentkArgs = ["--ca-cert-file", certFile];
      }
      kas = await startKas(env);
      cleanups.add(() => kas.cleanup());
      const a = kas.addresses as KasProcess["addresses"] & { private: string };
      agent = target(a.agent, withTls);
      internal = target(a.internal);
      privateApi = target(a.private, withTls);
      k8sProxy = target(a.k8sProxy!, withTls);
      platform = target(a.platform!);
      observability = target(a.observability);
      privateSecret = decodeSecret(readFileSync(join(kas.dataDir, ".gitlab_kas_private_api_secret"), "utf8"));
      agentA = await createAgentWithToken(kas, "before-the-storm");
      const agentk = startAgentk(kas.addresses.agent, agentA.token, {}, agentkArgs);
      cleanups.add(() => agentk.cleanup());
      const echo = echoClient(kas, agentA.agentId);
      cleanups.add(() => echo.close());
      await echo.client.echo({ payload: new Uint8Array([1]) }, { timeoutMs: 15_000 });
    });

    after(() => cleanups.run());

    afterEach(async function () {
      // Whatever the test threw at it: kas is up, and nothing reached the top of the process.
      expect(kas.running, `kas exited:\n${kas.output.slice(-3000)}`).to.equal(true);
      const metrics = await (await fetch(`${urlOf(observability)}/metrics`)).text();
      expect(metrics).to.match(/kas_uncaught_errors_total\{kind="uncaughtException"\} 0/);
      expect(metrics).to.match(/kas_uncaught_errors_total\{kind="unhandledRejection"\} 0/);
    });

    it("agent API: any :authority, odd :path, :scheme and :method get an answer on their stream", async () => {
      const s = session(agent);
      // GitLab's agentk over ws:// and wss:// names its percent-encoded dial target: served.
      const registered = await rawHttp2Request(
        s,
        { ":method": "POST", ":path": registerPath, ":authority": "ws:%2F%2F127.0.0.1:8150", "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${agentA.token}` },
        grpcFrame(toBinary(RegisterRequestSchema, create(RegisterRequestSchema, { podId: 42n }))),
      );
      expect(registered.grpcStatus, "Register with agentk's ws:// :authority").to.equal("0");
      const grpc = { ":method": "POST", ":path": registerPath, "content-type": "application/grpc" };
      const cases: http2.OutgoingHttpHeaders[] = [
        ...["wss:%2F%2Fkas.example.com%2F-%2Fkubernetes-agent%2F", "", "a b", "[::1", "%", "@", "x".repeat(4000), "kas:99999999", "kas:-1"].map((authority) => ({
          ...grpc,
          ":authority": authority,
        })),
        ...["*", "", "no-slash", "//x", "/a?b#c", "/%zz", `/${"x".repeat(4000)}`, `${registerPath}?%`, "/../etc/passwd", tunnelPath + "/"].map((path) => ({ ...grpc, ":path": path })),
        ...["ws", "", "javascript", "HTTPS"].map((scheme) => ({ ...grpc, ":scheme": scheme })),
        ...["GET", "PUT", "post", "PRI", "OPTIONS"].map((method) => ({ ...grpc, ":method": method })),
        { ...grpc, "content-type": "application/grpc-web-text" },
        { ...grpc, "content-type": "application/connect+json" },
        { ...grpc, "content-type": "text/html" },
        { ...grpc, ":path": tunnelPath, "grpc-timeout": "99999999H" },
        { ...grpc, ":path": tunnelPath, "grpc-timeout": "-1S" },
        { ...grpc, ":path": tunnelPath, authorization: "Bearer" },
        { ...grpc, authorization: "Basic Og==" },
        { ...grpc, authorization: `Bearer ${"x".repeat(8000)}` },
      ];
      for (const headers of cases) expectAnswered(await rawHttp2Request(s, headers, grpcFrame(new Uint8Array(3))), JSON.stringify(headers).slice(0, 120));
    });

    it("agent API: headers no client library sends, malformed and truncated frames, protocol abuse: a reset, a GOAWAY or a closed connection", async () => {
      const ok = requestBlock(agent, registerPath);
      const rawCases: Array<[string, Buffer[]]> = [
        ["upper-case header name", [headersFrame(1, encodeHeaderBlock([[":method", "POST"], [":path", registerPath], [":scheme", "http"], ["Content-Type", "application/grpc"]]))]],
        ["header name with a space", [headersFrame(1, Buffer.concat([ok, encodeHeaderBlock([["bad name", "x"]])]))]],
        ["header value with CR LF", [headersFrame(1, Buffer.concat([ok, encodeHeaderBlock([["x-inject", "a\r\nb: c"]])]))]],
        ["header value with NUL", [headersFrame(1, Buffer.concat([ok, encodeHeaderBlock([["x-nul", "a\0b"]])]))]],
        ["connection-specific header", [headersFrame(1, Buffer.concat([ok, encodeHeaderBlock([["connection", "keep-alive"]])]))]],
        ["te other than trailers", [headersFrame(1, Buffer.concat([ok, encodeHeaderBlock([["te", "gzip"]])]))]],
        ["pseudo-header after a regular one", [headersFrame(1, Buffer.concat([ok, encodeHeaderBlock([[":path", "/x"]])]))]],
        ["two :path", [headersFrame(1, encodeHeaderBlock([[":method", "POST"], [":path", "/a"], [":path", "/b"], [":scheme", "http"]]))]],
        ["no :path", [headersFrame(1, encodeHeaderBlock([[":method", "POST"], [":scheme", "http"]]))]],
        ["unknown pseudo-header", [headersFrame(1, Buffer.concat([encodeHeaderBlock([[":evil", "1"]]), ok]))]],
        ["CONNECT with :protocol", [headersFrame(1, encodeHeaderBlock([[":method", "CONNECT"], [":protocol", "websocket"], [":scheme", "http"], [":path", "/"], [":authority", "kas"]]))]],
        ["HEADERS on stream 0", [headersFrame(0, ok)]],
        ["HEADERS on an even stream", [headersFrame(2, ok)]],
        ["HPACK garbage", [headersFrame(1, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f, 0x80]))]],
        ["CONTINUATION without HEADERS", [encodeHttp2Frame(CONTINUATION, END_HEADERS, 1, ok)]],
        ["HEADERS never ended by a CONTINUATION, then DATA", [headersFrame(1, ok, 0), encodeHttp2Frame(DATA, 0, 1, Buffer.alloc(5))]],
        ["DATA on an idle stream", [encodeHttp2Frame(DATA, END_STREAM, 7, Buffer.alloc(10))]],
        ["DATA beyond the flow-control window", [headersFrame(1, ok), ...Array.from({ length: 80 }, () => encodeHttp2Frame(DATA, 0, 1, Buffer.alloc(16_384)))]],
        ["DATA frame longer than its bytes, then the connection ends", [headersFrame(1, ok), Buffer.from([0, 0x40, 0, DATA, 0, 0, 0, 0, 1, 1, 2, 3])]],
        ["RST_STREAM on stream 0", [encodeHttp2Frame(RST_STREAM, 0, 0, Buffer.alloc(4))]],
        ["RST_STREAM of the wrong size", [headersFrame(1, ok), encodeHttp2Frame(RST_STREAM, 0, 1, Buffer.alloc(3))]],
        ["SETTINGS with a window above 2^31-1", [encodeHttp2Frame(SETTINGS, 0, 0, Buffer.from([0, 4, 0x80, 0, 0, 0]))]],
        ["SETTINGS with a frame size below the minimum", [encodeHttp2Frame(SETTINGS, 0, 0, Buffer.from([0, 5, 0, 0, 0, 1]))]],
        ["SETTINGS of a length not a multiple of 6", [encodeHttp2Frame(SETTINGS, 0, 0, Buffer.alloc(5))]],
        ["WINDOW_UPDATE of 0", [encodeHttp2Frame(WINDOW_UPDATE, 0, 0, Buffer.alloc(4))]],
        ["WINDOW_UPDATE overflowing the window", [encodeHttp2Frame(WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff]))]],
        ["PRIORITY depending on itself", [encodeHttp2Frame(PRIORITY, 0, 1, Buffer.from([0, 0, 0, 1, 16]))]],
        ["PING of the wrong size", [encodeHttp2Frame(PING, 0, 0, Buffer.alloc(7))]],
        ["a frame above the maximum frame size", [encodeHttp2Frame(DATA, 0, 1, Buffer.alloc(20_000))]],
        ["unknown frame type", [encodeHttp2Frame(0xfe, 0xff, 1, Buffer.alloc(10)), headersFrame(1, ok, END_HEADERS | END_STREAM)]],
        ["GOAWAY with an error while a stream is open", [headersFrame(1, ok), encodeHttp2Frame(GOAWAY, 0, 0, Buffer.from([0, 0, 0, 1, 0, 0, 0, 2]))]],
        ["GOAWAY, then new streams", [encodeHttp2Frame(GOAWAY, 0, 0, Buffer.alloc(8)), headersFrame(1, ok), headersFrame(3, ok)]],
        ["rapid reset: 2 000 streams opened and reset", Array.from({ length: 2_000 }, (_, i) => [headersFrame(2 * i + 1, ok), encodeHttp2Frame(RST_STREAM, 0, 2 * i + 1, Buffer.from([0, 0, 0, 8]))]).flat()],
      ];
      for (const [name, frames] of rawCases) {
        const t0 = Date.now();
        const outcome = await sendRawHttp2(agent, frames);
        if (process.env.HOSTILE_DEBUG) console.log(name, outcome.ended, outcome.fromServer.goaway, Date.now() - t0);
        expect(outcome.ended, name).to.be.oneOf(["stream ended", "stream reset", "goaway", "closed"]);
      }
    });

    it("agent API: gRPC messages that lie about their length, end early or bomb: an error status on their stream", async () => {
      const s = session(agent);
      const bearer = { authorization: `Bearer ${agentA.token}` };
      const call = (path: string, body: Buffer, extra: http2.OutgoingHttpHeaders = {}) =>
        rawHttp2Request(s, { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...bearer, ...extra }, body);
      const status = async (path: string, body: Buffer, extra?: http2.OutgoingHttpHeaders) => (await call(path, body, extra)).grpcStatus;
      const small = new Uint8Array([8, 1]);
      // The tunnel (raw path) and Register (connect-es path), each with the agent's own token.
      for (const path of [tunnelPath, registerPath]) {
        expect(await status(path, grpcFrame(small, { declaredLength: 0xffffffff })), `${path}: a 4 GiB length`).to.equal(String(Code.ResourceExhausted));
        expect(await status(path, grpcFrame(small, { declaredLength: 100 })), `${path}: a message that ends early`).to.be.oneOf([String(Code.InvalidArgument), String(Code.Internal)]);
        expect(await status(path, Buffer.from([0, 0, 0])), `${path}: a cut length prefix`).to.be.oneOf([String(Code.InvalidArgument), String(Code.Internal)]);
        expect(await status(path, grpcFrame(small, { compressed: true })), `${path}: compressed without grpc-encoding`).to.be.oneOf([String(Code.Internal), String(Code.InvalidArgument)]);
        expect(await status(path, grpcFrame(small), { "grpc-encoding": "snappy" }), `${path}: an unknown grpc-encoding`).to.equal(String(Code.Unimplemented));
        expect(await status(path, grpcFrame(gzipBomb(64), { compressed: true }), { "grpc-encoding": "gzip" }), `${path}: a gzip bomb`).to.equal(String(Code.ResourceExhausted));
        expect(await status(path, grpcFrame(Buffer.from("not gzip"), { compressed: true }), { "grpc-encoding": "gzip" }), `${path}: corrupt gzip`).to.be.oneOf([String(Code.Internal), String(Code.InvalidArgument)]);
        expect(await status(path, grpcFrame(Buffer.from([0xff, 0xff, 0xff]))), `${path}: not protobuf`).to.be.oneOf([String(Code.Internal), String(Code.InvalidArgument)]);
      }
      // Without a token, the bomb is not even opened.
      expect((await call(registerPath, grpcFrame(gzipBomb(64), { compressed: true }), { "grpc-encoding": "gzip", authorization: "Bearer nope" })).grpcStatus).to.equal(String(Code.Unauthenticated));
    });

    it("agent API over HTTP/1.1 and WebSocket: bad requests, smuggling, garbage tunnels", async () => {
      const requests = [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        `POST ${registerPath} HTTP/1.1\r\nHost: ws:%2F%2Fkas\r\nContent-Type: application/proto\r\nContent-Length: 2\r\n\r\n\x08\x01`,
        `POST ${registerPath} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
        `POST ${registerPath} HTTP/1.1\r\nHost: kas\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
        `POST ${registerPath} HTTP/1.1\r\nHost: kas\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`,
        `POST ${registerPath} HTTP/1.1\r\nHost: kas\r\nContent-Length: -1\r\n\r\n`,
        `POST ${registerPath} HTTP/1.1\r\nHost: kas\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
        `GET / HTTP/1.1\r\nHost: kas\r\nBad Header: x\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: kas\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: kas\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: kas\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n`,
      ];
      for (const request of requests) {
        const code = await http1(agent, request);
        if (code !== undefined) expect(code, request.slice(0, 60)).to.be.within(101, 599);
      }
      // WebSocket tunnels: garbage frames, a text frame, an odd Host; each closed, alone.
      const wsUrl = `${withTls ? "wss" : "ws"}://${agent.host}:${agent.port}/`;
      for (const send of [(ws: WebSocket) => ws.send(Buffer.alloc(4096, 0x5a)), (ws: WebSocket) => ws.send("text"), (ws: WebSocket) => ws.send(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"))]) {
        const ws = new WebSocket(wsUrl, [WS_TUNNEL_SUBPROTOCOL], { rejectUnauthorized: false, headers: { host: "ws:%2F%2Fkas" } });
        cleanups.add(() => ws.terminate());
        ws.on("error", () => {});
        await within(HUNG_MS, new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject)), "the WebSocket to open");
        const closed = new Promise((resolve) => ws.once("close", resolve));
        send(ws);
        await within(HUNG_MS, closed, "the garbage tunnel to close");
      }
    });

    it("internal and private API: every odd call gets a gRPC status or a reset, strangers UNAUTHENTICATED", async () => {
      const internalJwt = await interceptorHeaders(internalApiClientInterceptor(kas.secret, agentA.agentId));
      const privateJwt = await interceptorHeaders(privateApiClientInterceptor(privateSecret, agentA.agentId));
      for (const [name, t, jwt] of [["internal", internal, internalJwt], ["private", privateApi, privateJwt]] as const) {
        const s = session(t);
        const grpc = { ":method": "POST", ":path": echoPath, "content-type": "application/grpc", te: "trailers" };
        const stranger = await rawHttp2Request(s, grpc, grpcFrame(new Uint8Array(0)));
        expect(stranger.grpcStatus, `${name}: no JWT`).to.equal(String(Code.Unauthenticated));
        const cases: http2.OutgoingHttpHeaders[] = [
          { ...grpc, ":authority": "ws:%2F%2Fkas" },
          { ...grpc, ":path": "*" },
          { ...grpc, ":path": "/a/b/c", ...jwt },
          { ...grpc, ":method": "GET" },
          { ...grpc, "content-type": "text/plain" },
          { ...grpc, authorization: "Bearer not.a.jwt" },
          { ...grpc, authorization: `Bearer ${"x".repeat(8000)}` },
          { ...grpc, ...jwt, "kas-hop-routing-agent-id": "-1" },
          { ...grpc, ...jwt, "kas-hop-routing-agent-id": "1e400" },
          { ...grpc, ...jwt, "grpc-timeout": "99999999H" },
        ];
        for (const headers of cases) expectAnswered(await rawHttp2Request(s, headers, grpcFrame(new Uint8Array(0))), `${name}: ${JSON.stringify(headers).slice(0, 100)}`);
        const routed = { ...grpc, ...jwt };
        const echo = toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload: new Uint8Array([1]) }));
        const lies: Array<[string, Buffer, http2.OutgoingHttpHeaders]> = [
          ["a 4 GiB length", grpcFrame(echo, { declaredLength: 0xffffffff }), {}],
          ["a message that ends early", grpcFrame(echo, { declaredLength: 100 }), {}],
          ["a gzip bomb", grpcFrame(gzipBomb(64), { compressed: true }), { "grpc-encoding": "gzip" }],
          ["an unknown grpc-encoding", grpcFrame(echo), { "grpc-encoding": "snappy" }],
        ];
        for (const [what, body, extra] of lies) {
          const answer = await rawHttp2Request(s, { ...routed, ...extra }, body);
          expect(answer.grpcStatus, `${name}: ${what}`).to.not.equal(undefined).and.to.not.equal("0");
        }
        const frames = await sendRawHttp2(t, [headersFrame(1, encodeHeaderBlock([[":method", "POST"], [":path", echoPath], [":scheme", "http"], ["Bad", "x"]]))]);
        expect(frames.ended, `${name}: an upper-case header name`).to.be.oneOf(["stream reset", "goaway", "closed"]);
      }
    });

    it("Kubernetes API proxy: odd paths, credentials and protocol get a Status, a reset or a closed connection", async () => {
      const paths = ["/api/v1/namespaces/..%2F..%2Fsecrets", "/api/%zz", "*", `/${"a".repeat(20_000)}`, "/api/v1/namespaces?watch=1&%", "//api"];
      for (const path of paths) {
        const code = await http1(k8sProxy, `GET ${path} HTTP/1.1\r\nHost: ws:%2F%2Fkas\r\nAuthorization: Bearer ci:1:nope\r\n\r\n`);
        if (code !== undefined) expect(code, path).to.be.within(400, 599);
      }
      for (const request of [
        "GET /api HTTP/1.0\r\n\r\n",
        "GET /api HTTP/1.1\r\nHost: kas\r\nAuthorization: Bearer pat:x:y\r\nImpersonate-User: admin\r\n\r\n",
        "POST /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: kas\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
        "POST /api HTTP/1.1\r\nHost: kas\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        `GET /api HTTP/1.1\r\nHost: kas\r\nAuthorization: Bearer ${"x".repeat(100_000)}\r\n\r\n`,
      ]) {
        const code = await http1(k8sProxy, request);
        if (code !== undefined) expect(code, request.slice(0, 60)).to.be.within(400, 599);
      }
      if (withTls) {
        const s = session(k8sProxy);
        for (const headers of [
          { ":path": "/api", ":authority": "ws:%2F%2Fkas" },
          { ":path": "*", ":method": "OPTIONS" },
          { ":path": "no-slash" },
          { ":path": "/api/..%2f..%2f", authorization: "Bearer ci:1:x" },
          { ":path": "/api", ":method": "DELETE", "content-length": "-5" },
        ] satisfies http2.OutgoingHttpHeaders[]) {
          expectAnswered(await rawHttp2Request(s, headers), JSON.stringify(headers));
        }
        const frames = await sendRawHttp2(k8sProxy, [headersFrame(1, encodeHeaderBlock([[":method", "GET"], [":path", "/api"], [":scheme", "https"], ["x", "a\r\nb"]]))]);
        expect(frames.ended).to.be.oneOf(["stream reset", "goaway", "closed"]);
      }
    });

    it("platform port (REST, internal API, git): odd requests get an HTTP error or a closed connection", async () => {
      const bomb = gzipBomb(64);
      const requests: Array<string | Buffer> = [
        "GET /api/v4/projects/%zz HTTP/1.1\r\nHost: kas\r\n\r\n",
        "GET /api/v4/projects HTTP/1.1\r\nHost: ws:%2F%2Fkas\r\nPRIVATE-TOKEN: nope\r\n\r\n",
        "GET /api/v4/projects HTTP/1.0\r\n\r\n",
        "POST /api/v4/projects HTTP/1.1\r\nHost: kas\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\":",
        "POST /api/v4/projects HTTP/1.1\r\nHost: kas\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        Buffer.concat([
          Buffer.from(`POST /api/v4/internal/kubernetes/agent_info HTTP/1.1\r\nHost: kas\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\nContent-Length: ${bomb.length}\r\n\r\n`),
          bomb,
        ]),
        "GET /api/v4/internal/kubernetes/agent_info HTTP/1.1\r\nHost: kas\r\nGitlab-Kas-Api-Request: not.a.jwt\r\n\r\n",
        "GET /root/%00.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: kas\r\n\r\n",
        "GET /root/x.git/info/refs?service=git-evil HTTP/1.1\r\nHost: kas\r\n\r\n",
        "POST /root/x.git/git-receive-pack HTTP/1.1\r\nHost: kas\r\nAuthorization: Basic Og==\r\nContent-Length: 4\r\n\r\n0000",
        `GET /${"../".repeat(50)}etc/passwd HTTP/1.1\r\nHost: kas\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: kas\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`,
      ];
      for (const request of requests) {
        const code = await http1(platform, request);
        if (code !== undefined) expect(code, String(request).slice(0, 60)).to.be.within(400, 599);
      }
    });

    it("observability port: odd requests get an HTTP answer or a closed connection", async () => {
      for (const request of ["GET /metrics?%zz HTTP/1.1\r\nHost: ws:%2F%2Fkas\r\n\r\n", "DELETE /liveness HTTP/1.0\r\n\r\n", "GET * HTTP/1.1\r\nHost: kas\r\n\r\n", "\r\n\r\n\r\n"]) {
        const code = await http1(observability, request);
        if (code !== undefined) expect(code, request).to.be.within(200, 599);
      }
    });

    it("every HTTP/2 listener takes a client's GOAWAY, with or without an error code, with streams open", async () => {
      for (const t of [agent, internal, privateApi, ...(withTls ? [k8sProxy] : [])]) {
        for (const code of [0, 2, 11]) {
          const block = encodeHeaderBlock([[":method", "POST"], [":scheme", t.tls ? "https" : "http"], [":authority", "kas"], [":path", echoPath], ["content-type", "application/grpc"]]);
          const goaway = Buffer.alloc(8);
          goaway.writeUInt32BE(1, 0);
          goaway.writeUInt32BE(code, 4);
          const outcome = await sendRawHttp2(t, [headersFrame(1, block), encodeHttp2Frame(DATA, 0, 1, Buffer.alloc(3)), encodeHttp2Frame(GOAWAY, 0, 0, goaway), headersFrame(3, block)]);
          expect(outcome.ended, `port ${t.port}, GOAWAY code ${code}`).to.be.oneOf(["stream ended", "stream reset", "goaway", "closed"]);
        }
      }
    });

    it("every listener closes connections that never finish a request head (HTTP/1.1) or open no stream (HTTP/2)", async () => {
      for (const t of [agent, k8sProxy, platform, observability]) await expectSlowHeadClosed(t, cleanups);
      for (const t of [agent, internal, privateApi, ...(withTls ? [k8sProxy] : [])]) await expectSilentHttp2SessionClosed(t, cleanups);
    });

    it("then serves agents as before: a new agentk registers, gets its configuration and serves a tunnel call; the first one still does", async () => {
      const b = await createAgentWithToken(kas, "after-the-storm");
      const agentk = startAgentk(kas.addresses.agent, b.token, {}, [...agentkArgs, "--observability-listen-address", "127.0.0.1:0"]);
      cleanups.add(() => agentk.cleanup());
      await agentk.waitFor(/applied agent configuration/, "the configuration", HUNG_MS);
      await waitFor(async () => (await api(kas, "GET", `/projects/${b.projectId}/cluster_agents/${b.agentId}/connections`)).json?.length === 1, HUNG_MS, "the registration");
      for (const id of [b.agentId, agentA.agentId]) {
        const echo = echoClient(kas, id);
        cleanups.add(() => echo.close());
        const res = await echo.client.echo({ payload: new TextEncoder().encode(`agent ${id}`) }, { timeoutMs: 15_000 });
        expect(new TextDecoder().decode(res.payload)).to.equal(`agent ${id}`);
      }
      // agentk's own safety net is on its observability port.
      const address = await agentk.waitFor(/"address":\{"host":"127\.0\.0\.1","port":(\d+)\}[^\n]*observability listening/, "the observability port");
      const metrics = await (await fetch(`http://127.0.0.1:${address[1]}/metrics`)).text();
      expect(metrics).to.match(/agentk_uncaught_errors_total\{kind="uncaughtException"\} 0/);
    });
  });
}

/** The headers an interceptor sets on a call (the gateway JWT and routing), for hand-made requests. */
async function interceptorHeaders(interceptor: ReturnType<typeof internalApiClientInterceptor>): Promise<Record<string, string>> {
  let captured: Record<string, string> = {};
  await interceptor(async (req) => {
    captured = Object.fromEntries(req.header.entries());
    return undefined as never;
  })({ header: new Headers() } as never);
  return captured;
}
