import http2 from "node:http2";
import { describe, it, beforeEach, afterEach } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  connectNodeAdapter,
  createConnectTransport,
  createGrpcTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { EchoResponseSchema, EchoService } from "../../gen/kasbridge/echo/v1/echo_pb.js";
import { ConnectRequestSchema, ReverseTunnel, type ConnectRequest } from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { echoService } from "../../modules/echo/agent/echo-service.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { LocalServiceHost } from "../agent/local-service-host.js";
import { TunnelPool } from "../agent/tunnel-pool.js";
import type { ServerTunnel } from "./server-tunnel.js";
import { InMemoryTunnelRegistry } from "./tunnel-registry.js";
import { AgentAuthenticator } from "../../kas/agent-authenticator.js";
import { connectionContextValues } from "../../kas/connection-context.js";
import { createAgentApiListener } from "../../transport/agent-api-listener.js";
import { maxDescriptorBytes, rawReverseTunnelStreams, reverseTunnelConnectPath, reverseTunnelService } from "./reverse-tunnel-service.js";
import { createTunnelGateway } from "./tunnel-gateway.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { bearer, routeTo } from "../../grpc/interceptors.test-support.js";
import { closeServer, listen, port } from "@kasbridge/testing/servers";
import { HUNG_MS, deferred, rejection, streamRejection, waitFor, within } from "@kasbridge/testing/wait";
import { frameHeader } from "../../grpc/grpc-frames.js";
import { localAgentCalls } from "./agent-calls.js";
import { DEFAULT_MAX_MESSAGE_BYTES, TUNNEL_ENVELOPE_BYTES } from "../../grpc/limits.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/**
 * KAS's agent API as kas-server wires it (gRPC tunnels on the raw HTTP/2 path, everything else
 * through connect-es), a gateway, and agents connecting with a chosen transport.
 */
async function startKas(opts: { maxMessageBytes?: number } = {}) {
  const platform = new StaticPlatformClient();
  platform.addToken("glagent-good", { agentId: 7, agentName: "a7", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 70 });
  const registry = new InMemoryTunnelRegistry();
  const shutdown = new AbortController();
  const auth = new AgentAuthenticator({ platform, logger });
  const deps = { auth, registry, logger, shutdownSignal: shutdown.signal, maxMessageBytes: opts.maxMessageBytes };
  let fallbackTunnelCalls = 0;
  const connectHandler = connectNodeAdapter({
    readMaxBytes: (opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES) + TUNNEL_ENVELOPE_BYTES,
    contextValues: connectionContextValues,
    routes: (router) => router.service(ReverseTunnel, reverseTunnelService(deps)),
  });
  const agentApi = await createAgentApiListener({
    port: 0,
    handler: (req, res) => {
      if (req.url === reverseTunnelConnectPath) fallbackTunnelCalls++;
      connectHandler(req, res);
    },
    streamHandler: rawReverseTunnelStreams(deps),
  });
  const gateway = createTunnelGateway({ agentCalls: localAgentCalls(registry), logger, authorize: async () => {} });
  const gatewayServer = http2.createServer();
  gatewayServer.on("stream", (stream, headers) => void gateway(stream, headers));
  await listen(gatewayServer);
  const agentUrl = agentApi.url("http");
  const clientSessions = new Http2SessionManager(`http://127.0.0.1:${port(gatewayServer)}`);
  const echo: Client<typeof EchoService> = createClient(
    EchoService,
    createGrpcTransport({
      baseUrl: `http://127.0.0.1:${port(gatewayServer)}`,
      sessionManager: clientSessions,
      interceptors: [routeTo(7)],
      readMaxBytes: 64 << 20,
      writeMaxBytes: 64 << 20,
    }),
  );
  // Released last to first: agents (added later) before the servers.
  const cleanup = new Cleanup();
  cleanup.add(() => Promise.all([agentApi.close(0), closeServer(gatewayServer)]));
  cleanup.add(() => clientSessions.abort());
  cleanup.add(() => auth.close());
  cleanup.add(() => registry.close());
  cleanup.add(() => shutdown.abort());
  return {
    platform,
    registry,
    shutdown,
    agentUrl,
    echo,
    fallbackTunnelCalls: () => fallbackTunnelCalls,
    /** Starts an agent pool on `transport` (gRPC over HTTP/2 by default). */
    async startAgent(options: { transport?: Transport; minIdle?: number; token?: string } = {}) {
      const agentSessions = new Http2SessionManager(agentUrl);
      const transport =
        options.transport ??
        createGrpcTransport({
          baseUrl: agentUrl,
          sessionManager: agentSessions,
          interceptors: [bearer(options.token ?? "glagent-good")],
        });
      // The agent's own limit stays at its default, so KAS's limit is the one tested.
      const host = new LocalServiceHost().register(EchoService, echoService("raw-agent"));
      const pool = new TunnelPool({ transport, host, logger, minIdleTunnels: options.minIdle ?? 2, backoff: { initialMs: 50, maxMs: 200 } });
      pool.start();
      cleanup.add(() => agentSessions.abort());
      cleanup.add(() => pool.stop(100));
      return pool;
    },
    /** A bare ReverseTunnel client, to speak the protocol by hand. */
    tunnelClient(token = "glagent-good") {
      const agentSessions = new Http2SessionManager(agentUrl);
      cleanup.add(() => agentSessions.abort());
      return createClient(
        ReverseTunnel,
        createGrpcTransport({ baseUrl: agentUrl, sessionManager: agentSessions, interceptors: [bearer(token)] }),
      );
    },
    close: () => cleanup.run(),
  };
}

/** An request stream that yields `messages`, then stays open until `end` resolves. */
function requests(messages: ConnectRequest[], end: Promise<void>): AsyncIterable<ConnectRequest> {
  return (async function* () {
    yield* messages;
    await end;
  })();
}

const descriptor = create(ConnectRequestSchema, {
  msg: {
    case: "descriptor",
    value: { agentDescriptor: { services: [{ name: "kasbridge.echo.v1.EchoService", methods: [{ name: "Echo" }] }] } },
  },
});

describe("ReverseTunnel/Connect on the raw HTTP/2 path", function () {
  let kas: Awaited<ReturnType<typeof startKas>>;
  beforeEach(async () => {
    kas = await startKas();
  });
  afterEach(async () => kas.close());

  it("carries unary, streaming and bidi calls without going through connect-es", async () => {
    const pool = await kas.startAgent();
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    const res = await kas.echo.echo({ payload: new TextEncoder().encode("hi") });
    expect(new TextDecoder().decode(res.payload)).to.equal("hi");
    expect(res.servedBy).to.equal("raw-agent");
    let n = 0;
    let bytes = 0;
    for await (const msg of kas.echo.serverStream({ count: 300, size: 20_000 })) {
      expect(msg.index).to.equal(n++);
      bytes += msg.payload.byteLength;
    }
    expect(bytes).to.equal(6_000_000);
    // KAS -> agent messages (request_info, message, close_send) go through the raw writer.
    async function* chunks() {
      for (let i = 0; i < 200; i++) yield { payload: new Uint8Array(20_000) };
    }
    const counted = await kas.echo.clientStream(chunks());
    expect(counted.messages).to.equal(200);
    expect(counted.totalBytes).to.equal(4_000_000n);
    const seen: number[] = [];
    async function* pings() {
      for (let i = 0; i < 20; i++) yield { payload: new Uint8Array([i]) };
    }
    for await (const msg of kas.echo.bidi(pings())) seen.push(msg.payload[0]);
    expect(seen).to.deep.equal([...Array(20).keys()]);
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    expect(pool.stats().idle).to.be.at.least(2);
    expect(kas.fallbackTunnelCalls()).to.equal(0);
  });

  it("ends a tunnel whose call succeeded without an error on its closedSignal", async () => {
    const tunnels: ServerTunnel[] = [];
    const register = kas.registry.register.bind(kas.registry);
    kas.registry.register = (tunnel) => {
      // Read now, so the signal exists before the tunnel closes.
      void tunnel.closedSignal;
      tunnels.push(tunnel);
      return register(tunnel);
    };
    await kas.startAgent();
    await waitFor(() => tunnels.length >= 2);
    const res = await kas.echo.echo({ payload: new TextEncoder().encode("ok") });
    expect(new TextDecoder().decode(res.payload)).to.equal("ok");
    const used = tunnels.find((t) => t.isTaken)!;
    await waitFor(() => used.isClosed);
    expect(used.closedSignal.aborted).to.equal(true);
    expect(used.closedSignal.reason).to.not.be.instanceOf(ConnectError);
  });

  it("passes error status, headers and trailers, and cancellation", async () => {
    await kas.startAgent();
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    const err = await rejection(kas.echo.fail({ code: Code.FailedPrecondition, message: "nope" }));
    expect(err.code).to.equal(Code.FailedPrecondition);
    expect(err.metadata.get("fail-trailer")).to.equal("present");
    const abort = new AbortController();
    const cancelled = await streamRejection(kas.echo.serverStream({ count: 1_000_000, size: 1000 }, { signal: abort.signal }), (_, i) => {
      if (i === 9) abort.abort();
    });
    expect(cancelled.code).to.equal(Code.Canceled);
    await waitFor(() => kas.registry.stats().busyTunnels === 0);
    const res = await kas.echo.echo({ payload: new Uint8Array([5]) });
    expect(res.payload[0]).to.equal(5);
  });

  it("accepts gzip-compressed messages from agents (GitLab's agentk compresses)", async () => {
    const sessions = new Http2SessionManager(kas.agentUrl);
    const transport = createGrpcTransport({
      baseUrl: kas.agentUrl,
      sessionManager: sessions,
      interceptors: [bearer("glagent-good")],
      sendCompression: compressionGzip,
      compressMinBytes: 1,
    });
    await kas.startAgent({ transport });
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    let bytes = 0;
    for await (const msg of kas.echo.serverStream({ count: 20, size: 50_000 })) bytes += msg.payload.byteLength;
    expect(bytes).to.equal(1_000_000);
    sessions.abort();
  });

  it("falls back to connect-es for other protocols (Connect over HTTP/2)", async () => {
    const transport = createConnectTransport({ baseUrl: kas.agentUrl, httpVersion: "2", interceptors: [bearer("glagent-good")] });
    await kas.startAgent({ transport });
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    const res = await kas.echo.echo({ payload: new Uint8Array([9]) });
    expect(res.payload[0]).to.equal(9);
    expect(kas.fallbackTunnelCalls()).to.be.at.least(2);
  });

  it("refuses unknown tokens, and a first message that is not a descriptor", async () => {
    const bad = kas.tunnelClient("glagent-unknown");
    const end = deferred();
    const unauthenticated = await streamRejection(bad.connect(requests([descriptor], end.promise)));
    expect(unauthenticated.code).to.equal(Code.Unauthenticated);

    const client = kas.tunnelClient();
    const header = create(ConnectRequestSchema, { msg: { case: "header", value: { meta: {} } } });
    const violation = await streamRejection(client.connect(requests([header], end.promise)));
    expect(violation.code).to.equal(Code.InvalidArgument);
    expect(violation.rawMessage).to.contain("expected descriptor");
    end.resolve();
    expect(kas.registry.stats().idleTunnels).to.equal(0);
  });

  it("withdraws the tunnel when the agent goes away, and ends idle tunnels on revocation and shutdown", async () => {
    const client = kas.tunnelClient();
    const abort = new AbortController();
    const end = deferred();
    const gone = streamRejection(client.connect(requests([descriptor], end.promise), { signal: abort.signal }));
    await waitFor(() => kas.registry.stats().idleTunnels === 1);
    abort.abort();
    expect((await gone).code).to.equal(Code.Canceled);
    await waitFor(() => kas.registry.stats().idleTunnels === 0 && kas.registry.stats().agents === 0);

    const revoked = streamRejection(client.connect(requests([descriptor], end.promise)));
    await waitFor(() => kas.registry.stats().idleTunnels === 1);
    kas.platform.revoke("glagent-good");
    expect((await revoked).code).to.equal(Code.Unauthenticated);
    await waitFor(() => kas.registry.stats().idleTunnels === 0);

    kas.platform.addToken("glagent-other", { agentId: 8, agentName: "a8", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 80 });
    const other = kas.tunnelClient("glagent-other");
    const shutDown = streamRejection(other.connect(requests([descriptor], end.promise)));
    await waitFor(() => kas.registry.stats().idleTunnels === 1);
    kas.shutdown.abort();
    expect((await shutDown).code).to.equal(Code.Unavailable);
    await waitFor(() => kas.registry.stats().idleTunnels === 0);
    end.resolve();
  });

  it("agent shutdown closes idle tunnels at once and cancels a call still running after the grace period", async () => {
    const pool = await kas.startAgent();
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    let received = 0;
    // Reads slowly, so the call is still running when the grace period ends.
    const slowReader = streamRejection(kas.echo.serverStream({ count: 1_000_000, size: 1000 }), async () => {
      if (++received % 100 === 0) await new Promise((r) => setTimeout(r, 5));
    });
    await waitFor(() => received > 0);
    await pool.stop(200);
    const err = await slowReader;
    expect(err.code).to.equal(Code.Unavailable);
    await waitFor(() => kas.registry.stats().idleTunnels === 0 && kas.registry.stats().busyTunnels === 0);
    expect(pool.stats()).to.deep.equal({ idle: 0, active: 0, workers: 0 });
  });

  it("resets, rather than answers with a status, the stream of a call its caller cancelled while the agent still sends", async () => {
    // A hand-made agent: a grpc-go agent would answer a status on a stream it still writes with a
    // reset of its own, which KAS's HTTP/2 server counts against nghttp2's rapid-reset limit.
    const session = http2.connect(kas.agentUrl);
    try {
      session.on("error", () => {});
      const stream = session.request({
        ":method": "POST",
        ":path": reverseTunnelConnectPath,
        "content-type": "application/grpc",
        te: "trailers",
        authorization: "Bearer glagent-good",
      });
      stream.on("error", () => {});
      const bytes = toBinary(ConnectRequestSchema, descriptor);
      stream.write(Buffer.concat([frameHeader(bytes.byteLength, false), bytes]));
      let trailers = false;
      stream.on("trailers", () => (trailers = true));
      const closed = new Promise<number>((resolve) => stream.on("close", () => resolve(stream.rstCode ?? -1)));
      const requestInfo = new Promise<void>((resolve) => stream.once("data", () => resolve()));
      stream.resume();
      await waitFor(() => kas.registry.stats().idleTunnels >= 1);
      const caller = new AbortController();
      const call = rejection(kas.echo.echo({ payload: new Uint8Array([1]) }, { signal: caller.signal }));
      await requestInfo;
      caller.abort();
      expect((await call).code).to.equal(Code.Canceled);
      expect(await closed).to.equal(http2.constants.NGHTTP2_CANCEL);
      expect(trailers).to.equal(false);
    } finally {
      session.destroy();
    }
  });

  it("drops metadata of an agent's answer that is no valid HTTP/2 header, and still answers the caller", async () => {
    // A hand-made agent answering with header and trailer metadata that no HTTP/2 peer may send:
    // Node refuses such headers with an exception, thrown in a callback of the stream's for the
    // trailers, which left the call hanging (or took the process down).
    const client = kas.tunnelClient();
    const asked = deferred();
    const bad = { "bad name": { value: ["x"] }, "x-line": { value: ["a\r\nb"] }, "x-nul": { value: ["a\0b"] } };
    const answer = [
      create(ConnectRequestSchema, { msg: { case: "header", value: { meta: { ...bad, "x-header": { value: ["kept"] } } } } }),
      create(ConnectRequestSchema, {
        msg: { case: "message", value: { data: toBinary(EchoResponseSchema, create(EchoResponseSchema, { servedBy: "hand" })) } },
      }),
      create(ConnectRequestSchema, { msg: { case: "trailer", value: { meta: { ...bad, "x-trailer": { value: ["kept"] } } } } }),
    ];
    const agentRequests = (async function* () {
      yield descriptor;
      await asked.promise;
      yield* answer;
    })();
    const agentSide = (async () => {
      for await (const response of client.connect(agentRequests)) if (response.msg.case === "requestInfo") asked.resolve();
    })().catch(() => {});
    await waitFor(() => kas.registry.stats().idleTunnels === 1);
    let headers: Headers | undefined;
    let trailers: Headers | undefined;
    const call = kas.echo.echo({ payload: new Uint8Array([1]) }, { onHeader: (h) => (headers = h), onTrailer: (t) => (trailers = t) });
    expect((await within(HUNG_MS, call, "the call")).servedBy).to.equal("hand");
    expect(headers?.get("x-header")).to.equal("kept");
    expect(trailers?.get("x-trailer")).to.equal("kept");
    expect([...(headers?.keys() ?? []), ...(trailers?.keys() ?? [])]).to.not.include.members(["x-line", "x-nul"]);
    await agentSide;
  });

  it("reads no first message above 64 KiB before the tunnel is set up, whatever the message limit", async () => {
    const client = kas.tunnelClient();
    const end = deferred();
    const big = create(ConnectRequestSchema, { msg: { case: "header", value: { meta: { junk: { value: ["x".repeat(100 * 1024)] } } } } });
    const err = await streamRejection(client.connect(requests([big], end.promise)));
    end.resolve();
    expect(err.code).to.equal(Code.ResourceExhausted);
    expect(err.rawMessage).to.contain(`limit of ${maxDescriptorBytes} bytes`);
    expect(kas.registry.stats().idleTunnels).to.equal(0);
  });

  it("fails a tunnel whose agent sends a message above the limit with RESOURCE_EXHAUSTED", async () => {
    await kas.close();
    kas = await startKas({ maxMessageBytes: 64 * 1024 });
    await kas.startAgent();
    await waitFor(() => kas.registry.stats().idleTunnels >= 2);
    const err = await streamRejection(kas.echo.serverStream({ count: 1, size: 200_000 }));
    expect(err.code).to.equal(Code.ResourceExhausted);
    // The pool refills and small calls still work.
    const res = await kas.echo.echo({ payload: new Uint8Array([3]) });
    expect(res.payload[0]).to.equal(3);
  });
});
