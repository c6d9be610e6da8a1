import http2 from "node:http2";
import { expect } from "chai";
import pino from "pino";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { ConnectRequestSchema, ConnectResponseSchema, ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { internalApiClientInterceptor } from "../kas/internal-api-auth.js";
import { createKasServer } from "../kas/kas-server.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { http2Tap } from "../grpc/http2-frames.test-support.js";
import { rejection, waitFor } from "@kasbridge/testing/wait";
import { encodeFrame } from "../grpc/grpc-frames.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const connectPath = `/${ReverseTunnel.typeName}/${ReverseTunnel.method.connect.name}`;
const descriptor = create(ConnectRequestSchema, {
  msg: {
    case: "descriptor",
    value: { agentDescriptor: { services: [{ name: "kasbridge.echo.v1.EchoService", methods: [{ name: "Echo" }] }] } },
  },
});

// Regression: KAS reset (RST_STREAM CANCEL) the tunnel stream of a call its caller cancelled while
// a message to the agent was only partly sent: its length prefix and body went out in two writes
// (the reset dropped the second), or the message was larger than a frame or than the agent's
// flow-control window. grpc-go (GitLab's agentk) reads a reset inside a message as a truncated
// message, INTERNAL "unexpected EOF", logs an error and backs off that tunnel, instead of reading
// Canceled and reopening at once. A hand-made agent whose flow-control window stops KAS inside a
// message sees, frame by frame, what arrives before the reset.
describe("a call cancelled while KAS is inside a message to the agent (real KAS, frame-level agent)", function () {
  this.timeout(30_000);

  const cases = [
    // A window of 16 bytes stops KAS inside request_info (a message of about 70 bytes).
    { name: "small message (request_info)", windowBytes: 16, payloadBytes: 10, cutInside: "requestInfo" },
    // request_info fits; the request message spans frames of 16 KiB and the window ends in its second.
    { name: "message larger than one frame", windowBytes: 20_000, payloadBytes: 30_000, cutInside: "message" },
    // The window (64 KiB, Node's default) ends after a sixteenth of the message.
    { name: "message larger than the flow-control window", windowBytes: 65_535, payloadBytes: 1 << 20, cutInside: "message" },
  ] as const;

  for (const { name, windowBytes, payloadBytes, cutInside } of cases) {
    it(`${name}: the agent receives the message whole, then RST_STREAM CANCEL`, async () => {
      const cleanup = new Cleanup();
      try {
        const platform = new StaticPlatformClient();
        platform.addToken("glagent-cut", { agentId: 5, agentName: "cut", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 50 });
        const secret = new Uint8Array(32).fill(6);
        const kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: secret } });
        cleanup.add(() => kas.close(100));
        const tap = await http2Tap(Number(new URL(kas.agentApi.url("http")).port));
        cleanup.add(() => tap.close());

        // The agent: one tunnel stream that sends its descriptor and reads nothing until told to,
        // so its flow-control window holds KAS inside a message.
        const session = cleanup.track(http2.connect(`http://127.0.0.1:${tap.port}`, { settings: { initialWindowSize: windowBytes } }));
        session.on("error", () => {});
        const tunnel = session.request({
          ":method": "POST",
          ":path": connectPath,
          "content-type": "application/grpc",
          te: "trailers",
          authorization: "Bearer glagent-cut",
        });
        tunnel.on("error", () => {});
        tunnel.write(encodeFrame(toBinary(ConnectRequestSchema, descriptor)));
        await waitFor(() => kas.registry.stats().idleTunnels === 1, undefined, "the tunnel to be registered");
        const received = tap.toClient.stream(tunnel.id!);

        const baseUrl = `http://127.0.0.1:${kas.internalApiAddress.port}`;
        const callerSessions = new Http2SessionManager(baseUrl);
        cleanup.add(() => callerSessions.abort());
        const echo = createClient(
          EchoService,
          createGrpcTransport({ baseUrl, sessionManager: callerSessions, interceptors: [internalApiClientInterceptor(secret, 5)], writeMaxBytes: 4 << 20 }),
        );
        const caller = new AbortController();
        const call = rejection(echo.echo({ payload: new Uint8Array(payloadBytes).fill(7) }, { signal: caller.signal }));
        const wholeBefore = cutInside === "requestInfo" ? 0 : 1;
        await waitFor(() => received.messages.length === wholeBefore && received.partial, undefined, `KAS to stop inside ${cutInside}`);

        caller.abort();
        expect((await call).code).to.equal(Code.Canceled);
        // KAS has taken the cancel: the tunnel is gone from the registry.
        await waitFor(() => kas.registry.stats().busyTunnels === 0, undefined, "the cancelled tunnel to be withdrawn");
        tunnel.resume();
        await waitFor(() => received.reset !== undefined, undefined, "the tunnel stream to be reset");

        const messages = received.messages.map((bytes) => fromBinary(ConnectResponseSchema, bytes).msg);
        expect(received.reset!.partial, `reset inside a message (${received.dataBytes} bytes received)`).to.equal(false);
        // A reset, not a status: a grpc-go agent would answer a status with a reset of its own.
        expect(received.reset!.code).to.equal(http2.constants.NGHTTP2_CANCEL);
        expect(received.endStream).to.equal(undefined);
        expect(messages[0]?.case).to.equal("requestInfo");
        if (cutInside === "message") {
          const request = messages[1];
          expect(request?.case).to.equal("message");
          if (request?.case === "message") expect(request.value.data.byteLength).to.be.greaterThan(payloadBytes);
        }
        expect(tap.toClient.cutStreams()).to.deep.equal([]);
      } finally {
        await cleanup.run();
      }
    });
  }
});
