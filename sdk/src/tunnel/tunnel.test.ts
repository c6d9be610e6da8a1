import http2 from "node:http2";
import { expect } from "chai";
import pino from "pino";
import { Code, ConnectError, createClient, type Client, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { echoService } from "../modules/echo/agent/echo-service.js";
import { AgentAuthenticator } from "../kas/agent-authenticator.js";
import { connectionContextValues } from "../kas/connection-context.js";
import { reverseTunnelService } from "./server/reverse-tunnel-service.js";
import { createTunnelGateway } from "./server/tunnel-gateway.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { LocalServiceHost } from "./agent/local-service-host.js";
import { TunnelPool } from "./agent/tunnel-pool.js";
import { rawTunnelStreams } from "./agent/tunnel-stream.js";
import { createAgentTransport } from "../transport/agent-transport.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { bearer, routeTo } from "../grpc/interceptors.test-support.js";
import { closeServer, listen, port } from "@kasbridge/testing/servers";
import { rejection, streamRejection, waitFor } from "@kasbridge/testing/wait";
import { InMemoryTunnelRegistry } from "./server/tunnel-registry.js";
import { localAgentCalls } from "./server/agent-calls.js";
import { DEFAULT_MAX_MESSAGE_BYTES, TUNNEL_ENVELOPE_BYTES } from "../grpc/limits.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/**
 * How the agent opens its tunnel streams: a connect-es client on a gRPC transport, or raw HTTP/2
 * streams on the agent transport's connection (what createAgent uses; gzip-compressed requests).
 */
type AgentStreams = "connect-es" | "raw";

/** KAS (agent API + gateway on plain h2c servers), one agent pool, and a client of the gateway. */
async function startHarness(
  opts: {
    maxMessageBytes?: number;
    minIdle?: number;
    streams?: AgentStreams;
    echo?: Partial<ServiceImpl<typeof EchoService>>;
    /** The gateway's wait for a tunnel of a call without a deadline. */
    tunnelWaitMs?: number;
  } = {},
) {
  const platform = new StaticPlatformClient();
  platform.addToken("glagent-good", { agentId: 7, agentName: "a7", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 70 });
  const registry = new InMemoryTunnelRegistry();
  const shutdown = new AbortController();
  const auth = new AgentAuthenticator({ platform, logger });
  const agentApi = http2.createServer(
    connectNodeAdapter({
      grpc: true,
      readMaxBytes: (opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES) + TUNNEL_ENVELOPE_BYTES,
      contextValues: connectionContextValues,
      routes: (router) => router.service(ReverseTunnel, reverseTunnelService({ auth, registry, logger, shutdownSignal: shutdown.signal })),
    }),
  );
  const gateway = createTunnelGateway({
    agentCalls: localAgentCalls(registry),
    logger,
    authorize: async () => {},
    maxMessageBytes: opts.maxMessageBytes,
    defaultTunnelWaitMs: opts.tunnelWaitMs,
  });
  const gatewayServer = http2.createServer();
  gatewayServer.on("stream", (stream, headers) => void gateway(stream, headers));
  await Promise.all([listen(agentApi), listen(gatewayServer)]);

  const agentSessions = new Http2SessionManager(`http://127.0.0.1:${port(agentApi)}`);
  const echoImpl: Partial<ServiceImpl<typeof EchoService>> = { ...echoService("agent-under-test"), ...opts.echo };
  const host = new LocalServiceHost({ maxMessageBytes: opts.maxMessageBytes }).register(EchoService, echoImpl);
  const agentTransport = createAgentTransport({
    url: `grpc://127.0.0.1:${port(agentApi)}`,
    callHeaders: { authorization: "Bearer glagent-good" },
    readMaxBytes: (opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES) + TUNNEL_ENVELOPE_BYTES,
  });
  const poolFailures: ConnectError[] = [];
  const pool = new TunnelPool({
    transport: createGrpcTransport({
      baseUrl: `http://127.0.0.1:${port(agentApi)}`,
      sessionManager: agentSessions,
      interceptors: [bearer("glagent-good")],
      readMaxBytes: (opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES) + TUNNEL_ENVELOPE_BYTES,
    }),
    openStream: opts.streams === "raw" ? rawTunnelStreams(agentTransport) : undefined,
    host,
    logger,
    minIdleTunnels: opts.minIdle ?? 2,
    backoff: { initialMs: 50, maxMs: 200 },
    onFailure: (e) => poolFailures.push(e),
  });
  pool.start();
  const clientSessions = new Http2SessionManager(`http://127.0.0.1:${port(gatewayServer)}`);
  const client = createClient(
    EchoService,
    createGrpcTransport({
      baseUrl: `http://127.0.0.1:${port(gatewayServer)}`,
      sessionManager: clientSessions,
      interceptors: [routeTo(7)],
      readMaxBytes: 64 << 20,
      writeMaxBytes: 64 << 20,
    }),
  );
  // Released last to first, also when the harness fails to come up.
  const cleanup = new Cleanup();
  cleanup.add(() => Promise.all([closeServer(agentApi), closeServer(gatewayServer)]));
  cleanup.add(() => clientSessions.abort());
  cleanup.add(() => agentTransport.close());
  cleanup.add(() => agentSessions.abort());
  cleanup.add(() => auth.close());
  cleanup.add(() => registry.close());
  cleanup.add(() => shutdown.abort());
  cleanup.add(() => pool.stop(100));
  await waitFor(() => registry.stats().idleTunnels >= (opts.minIdle ?? 2), undefined, "the agent's idle tunnels").catch(async (error: unknown) => {
    await cleanup.run();
    throw error;
  });
  return {
    platform,
    registry,
    pool,
    /** What the agent's pool reported failing (once per backoff step). */
    poolFailures,
    client,
    gatewayPort: port(gatewayServer),
    close: () => cleanup.run(),
  };
}

for (const streams of ["connect-es", "raw"] as const)
describe(`reverse tunnel (agent pool <-> KAS registry <-> gateway), agent streams: ${streams}`, function () {
  let h: Awaited<ReturnType<typeof startHarness>>;
  let echo: Client<typeof EchoService>;
  beforeEach(async () => {
    h = await startHarness({ streams });
    echo = h.client;
  });
  afterEach(async () => h.close());

  it("carries a unary call and replaces the used tunnel", async () => {
    const res = await echo.echo({ payload: new TextEncoder().encode("hello") });
    expect(new TextDecoder().decode(res.payload)).to.equal("hello");
    expect(res.servedBy).to.equal("agent-under-test");
    await waitFor(() => h.registry.stats().idleTunnels >= 2);
  });

  it("streams many server messages in order", async () => {
    let n = 0;
    let bytes = 0;
    for await (const msg of echo.serverStream({ count: 500, size: 10_000 })) {
      expect(msg.index).to.equal(n++);
      bytes += msg.payload.byteLength;
    }
    expect(n).to.equal(500);
    expect(bytes).to.equal(5_000_000);
  });

  it("carries client streaming and bidi streaming", async () => {
    async function* chunks() {
      for (let i = 0; i < 50; i++) yield { payload: new Uint8Array(1000) };
    }
    const collected = await echo.clientStream(chunks());
    expect(collected.messages).to.equal(50);
    expect(collected.totalBytes).to.equal(50_000n);
    const seen: number[] = [];
    async function* pings() {
      for (let i = 0; i < 20; i++) yield { payload: new Uint8Array([i]) };
    }
    for await (const msg of echo.bidi(pings())) seen.push(msg.payload[0]);
    expect(seen).to.deep.equal([...Array(20).keys()]);
  });

  it("passes headers, trailers and error status end to end", async () => {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const stream = echo.serverStream(
      { count: 1, size: 1, echoHeader: "x-test" },
      { headers: { "x-test": "v1" }, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
    );
    for await (const _ of stream) {
      /* drain */
    }
    expect(header?.get("echo-x-test")).to.equal("v1");
    expect(trailer?.get("echo-count")).to.equal("1");
    const ce = await rejection(echo.fail({ code: Code.FailedPrecondition, message: "nope: ünïcode" }));
    expect(ce.code).to.equal(Code.FailedPrecondition);
    expect(ce.rawMessage).to.equal("nope: ünïcode");
    expect(ce.metadata.get("fail-trailer")).to.equal("present");
  });

  it("fails with GitLab's DEADLINE_EXCEEDED when no tunnel of the agent turns up in time", async () => {
    // No deadline on the call, so the gateway's own wait ends it, not a race with the client's deadline.
    await h.close();
    h = await startHarness({ streams, tunnelWaitMs: 200 });
    echo = h.client;
    const sessions = new Http2SessionManager(`http://127.0.0.1:${h.gatewayPort}`);
    try {
      const other = createClient(
        EchoService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${h.gatewayPort}`, sessionManager: sessions, interceptors: [routeTo(99)] }),
      );
      const err = await rejection(other.echo({}));
      expect(err.code).to.equal(Code.DeadlineExceeded);
      expect(err.rawMessage).to.equal("Agent connection not found. Is agent up to date and connected?");
    } finally {
      sessions.abort();
    }
  });

  it("cancels the agent's handler when the client cancels", async () => {
    const abort = new AbortController();
    const err = await streamRejection(echo.serverStream({ count: 1_000_000, size: 1000 }, { signal: abort.signal }), (_, i) => {
      if (i === 9) abort.abort();
    });
    expect(err.code).to.equal(Code.Canceled);
    // The agent's tunnel ends and the pool refills; the next call works.
    await waitFor(() => h.pool.stats().active === 0);
    const res = await echo.echo({ payload: new Uint8Array([1]) });
    expect(res.payload[0]).to.equal(1);
  });

  it("closes tunnels when the token is revoked and refuses the token afterwards", async () => {
    const failures = h.poolFailures;
    h.platform.revoke("glagent-good");
    await waitFor(() => h.registry.stats().idleTunnels === 0, undefined, "the revoked token's tunnels to close");
    // The agent's attempts to open tunnels again are refused for the token, not for anything else.
    await waitFor(() => failures.length > 0, undefined, "the agent to try again");
    expect(failures.map((e) => e.code)).to.include(Code.Unauthenticated);
    expect(h.registry.stats().idleTunnels).to.equal(0);
  });

  it("aborts a handler's signal once its call has finished, as connect does", async () => {
    await h.close();
    const signals: AbortSignal[] = [];
    h = await startHarness({
      streams,
      echo: {
        echo(req, ctx) {
          signals.push(ctx.signal);
          return { payload: req.payload };
        },
      },
    });
    echo = h.client;
    await echo.echo({ payload: new Uint8Array([1]) });
    await waitFor(() => signals.length === 1 && signals[0].aborted);
    expect(signals[0].reason).to.be.instanceOf(ConnectError);
  });

  it("serves 200 concurrent calls through one agent", async () => {
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => echo.echo({ payload: new Uint8Array([i % 256]) })),
    );
    results.forEach((r, i) => expect(r.payload[0]).to.equal(i % 256));
  });
});

describe("tunnel gateway deadlines", function () {
  it("waits for a tunnel when the call's grpc-timeout is beyond setTimeout's range (2^31-1 ms)", async () => {
    const h = await startHarness();
    const sessions = new Http2SessionManager(`http://127.0.0.1:${h.gatewayPort}`);
    try {
      const waits: AbortSignal[] = [];
      const acquire = h.registry.acquire.bind(h.registry);
      h.registry.acquire = (agentId, methodName, signal) => {
        waits.push(signal);
        return acquire(agentId, methodName, signal);
      };
      const other = createClient(
        EchoService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${h.gatewayPort}`, sessionManager: sessions, interceptors: [routeTo(99)] }),
      );
      const abort = new AbortController();
      // 720 hours (30 days) for an agent that is not connected: the gateway waits for its tunnel.
      const call = rejection(other.echo({}, { signal: abort.signal, headers: { "grpc-timeout": "720H" } }));
      await waitFor(() => waits.length === 1);
      // A 1 ms timer armed now fires after any 1 ms timer the gateway armed before acquire() (the
      // bug this guards against: a wait beyond setTimeout's range fires at once).
      await new Promise((resolve) => setTimeout(resolve, 1));
      expect(waits[0].aborted).to.equal(false);
      abort.abort();
      expect((await call).code).to.equal(Code.Canceled);
    } finally {
      sessions.abort();
      await h.close();
    }
  });
});
