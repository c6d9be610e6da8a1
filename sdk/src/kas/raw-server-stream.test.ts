import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { describe, it, beforeEach, afterEach } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  AgentConfiguration,
  ConfigurationRequestSchema,
  ConfigurationResponseSchema,
} from "../gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { bearer } from "../grpc/interceptors.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgentApiListener } from "../transport/agent-api-listener.js";
import { encodeFrame as frame, frameHeader } from "../grpc/grpc-frames.js";
import { AgentAuthenticator } from "./agent-authenticator.js";
import { rawGrpcMethods } from "../grpc/raw-dispatch.js";
import { rawServerStreamingMethod, type RawServerStreamCall } from "./raw-server-stream.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const path = `/${AgentConfiguration.typeName}/${AgentConfiguration.method.getConfiguration.name}`;
type Call = RawServerStreamCall<typeof ConfigurationResponseSchema, string>;

/**
 * A raw server-streaming method on a real agent API listener. The test handler remembers each
 * call and, by the request's commit_id, answers: "echo" sends the commit id back and stays open,
 * "count:N:SIZE" sends N messages of SIZE bytes (awaiting backpressure) then OK, "fail" ends with
 * FAILED_PRECONDITION, "big" sends a message above the limit.
 */
async function startServer(maxMessageBytes = 1 << 20, maxRequestBytes?: number) {
  const platform = new StaticPlatformClient();
  platform.addToken("glagent-good", { agentId: 7, agentName: "a7", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 70 });
  platform.addToken("glagent-other", { agentId: 8, agentName: "a8", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 80 });
  const shutdown = new AbortController();
  const auth = new AgentAuthenticator({ platform, logger });
  const started: Call[] = [];
  const ended: Call[] = [];
  let fallback = 0;
  const method = rawServerStreamingMethod({
    method: AgentConfiguration.method.getConfiguration,
    auth,
    shutdownSignal: shutdown.signal,
    maxMessageBytes,
    maxRequestBytes,
    handler: {
      start(call: Call, request) {
        call.state = request.commitId;
        started.push(call);
        const [kind, n, size] = request.commitId.split(":");
        if (kind === "echo") void call.send(create(ConfigurationResponseSchema, { commitId: `agent ${call.agent.agentId}` }));
        if (kind === "fail") call.finish(new ConnectError("no config for you: ü", Code.FailedPrecondition));
        if (kind === "throw") throw new Error("handler bug");
        if (kind === "big") call.send(create(ConfigurationResponseSchema, { commitId: "x".repeat(maxMessageBytes) })).catch(() => {});
        if (kind === "count") {
          void (async () => {
            for (let i = 0; i < Number(n); i++) {
              await call.send(create(ConfigurationResponseSchema, { commitId: `${i}:`.padEnd(Number(size), "y") }));
            }
            call.finish();
          })();
        }
      },
      ended(call: Call) {
        ended.push(call);
      },
    },
  });
  const listener = await createAgentApiListener({
    port: 0,
    handler: (_req, res) => {
      fallback++;
      res.writeHead(404).end();
    },
    streamHandler: rawGrpcMethods([method]),
  });
  const sessions: Http2SessionManager[] = [];
  const url = listener.url("http");
  return {
    platform,
    shutdown,
    started,
    ended,
    url,
    fallback: () => fallback,
    client(token = "glagent-good", options: { gzip?: boolean } = {}) {
      const sessionManager = new Http2SessionManager(url);
      sessions.push(sessionManager);
      return {
        sessionManager,
        client: createClient(
          AgentConfiguration,
          createGrpcTransport({
            baseUrl: url,
            sessionManager,
            interceptors: [bearer(token)],
            sendCompression: options.gzip ? compressionGzip : undefined,
            compressMinBytes: 0,
          }),
        ),
      };
    },
    async close() {
      for (const s of sessions) s.abort();
      shutdown.abort();
      auth.close();
      await listener.close(0);
    },
  };
}

/** Reads a whole call; resolves with its messages and its error (undefined: OK). */
async function collect(stream: AsyncIterable<{ commitId: string }>): Promise<{ messages: string[]; error?: ConnectError }> {
  const messages: string[] = [];
  try {
    for await (const m of stream) messages.push(m.commitId);
    return { messages };
  } catch (error) {
    return { messages, error: ConnectError.from(error) };
  }
}

/** A gRPC call by hand over node:http2: the body is sent as given. Resolves with the status trailers. */
function rawCall(url: string, body: Buffer, extraHeaders: Record<string, string> = {}): Promise<{ status?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      authorization: "Bearer glagent-good",
      ...extraHeaders,
    });
    let result: { status?: string; message?: string } = {};
    stream.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) result = { status: String(headers["grpc-status"]), message: headers["grpc-message"] as string };
    });
    stream.on("trailers", (trailers) => {
      result = { status: String(trailers["grpc-status"]), message: trailers["grpc-message"] as string };
    });
    stream.resume();
    stream.on("close", () => {
      session.close();
      resolve(result);
    });
    stream.end(body);
  });
}

describe("raw server-streaming gRPC method (rawServerStreamingMethod)", function () {
  let server: Awaited<ReturnType<typeof startServer>>;
  beforeEach(async () => {
    server = await startServer();
  });
  afterEach(async () => server.close());

  it("authenticates, passes the request, and writes many messages with backpressure, then OK", async () => {
    const { client } = server.client();
    // 64 x 256 KiB: far more than the client's HTTP/2 window, so writes wait for drain.
    const result = await collect(client.getConfiguration({ commitId: "count:64:262144" }));
    expect(result.error).to.equal(undefined);
    expect(result.messages).to.have.length(64);
    result.messages.forEach((m, i) => expect(m.startsWith(`${i}:`)).to.equal(true));
    expect(server.started[0].agent.agentId).to.equal(7);
    await waitFor(() => server.ended.length === 1);
    expect(server.ended[0].endError).to.equal(undefined);
    expect(server.fallback()).to.equal(0);
  });

  it("accepts a gzip-compressed request", async () => {
    const { client } = server.client("glagent-good", { gzip: true });
    const result = await collect(client.getConfiguration({ commitId: "count:1:10" }));
    expect(result.error).to.equal(undefined);
    expect(result.messages).to.have.length(1);
  });

  it("ends with the handler's error as gRPC status (message percent-encoded and decoded back)", async () => {
    const { client } = server.client();
    const result = await collect(client.getConfiguration({ commitId: "fail" }));
    expect(result.error?.code).to.equal(Code.FailedPrecondition);
    expect(result.error?.rawMessage).to.equal("no config for you: ü");
    // Anything but a ConnectError is INTERNAL "internal error", as connect-es sends it.
    const thrown = await collect(client.getConfiguration({ commitId: "throw" }));
    expect(thrown.error?.code).to.equal(Code.Internal);
    expect(thrown.error?.rawMessage).to.equal("internal error");
  });

  it("refuses an unknown token with UNAUTHENTICATED and never starts the handler", async () => {
    const { client } = server.client("glagent-unknown");
    const result = await collect(client.getConfiguration({ commitId: "echo" }));
    expect(result.error?.code).to.equal(Code.Unauthenticated);
    expect(server.started).to.have.length(0);
  });

  it("ends the call when the client cancels, and when its session closes", async () => {
    const { client } = server.client();
    const abort = new AbortController();
    const first = collect(client.getConfiguration({ commitId: "echo" }, { signal: abort.signal }));
    await waitFor(() => server.started.length === 1);
    abort.abort();
    expect((await first).error?.code).to.equal(Code.Canceled);
    await waitFor(() => server.ended.length === 1);
    expect(server.ended[0].endError?.code).to.equal(Code.Canceled);
    // Sending on an ended call fails instead of writing.
    let rejected: unknown;
    await server.ended[0].send(create(ConfigurationResponseSchema)).catch((e: unknown) => (rejected = e));
    expect(rejected).to.be.instanceOf(ConnectError);

    const other = server.client();
    const second = collect(other.client.getConfiguration({ commitId: "echo" }));
    await waitFor(() => server.started.length === 2);
    other.sessionManager.abort();
    await second;
    await waitFor(() => server.ended.length === 2);
    expect(server.ended[1].endError?.code).to.equal(Code.Canceled);
  });

  it("keeps a call whose grpc-timeout is beyond setTimeout's range (2^31-1 ms) open", async () => {
    const { client } = server.client();
    const abort = new AbortController();
    // 720 hours (30 days): setTimeout would clamp it to 1 ms and end the call at once.
    const call = collect(client.getConfiguration({ commitId: "echo" }, { signal: abort.signal, headers: { "grpc-timeout": "720H" } }));
    await waitFor(() => server.started.length === 1);
    // A 1 ms timer armed now fires after any 1 ms timer the server armed before starting the call.
    await new Promise((resolve) => setTimeout(resolve, 1));
    expect(server.ended).to.have.length(0);
    abort.abort();
    expect((await call).messages).to.deep.equal(["agent 7"]);
    await waitFor(() => server.ended.length === 1);
    expect(server.ended[0].endError?.code).to.equal(Code.Canceled);
  });

  it("ends the calls of a revoked token with UNAUTHENTICATED, and all calls on KAS shutdown with UNAVAILABLE", async () => {
    const good = collect(server.client().client.getConfiguration({ commitId: "echo" }));
    const good2 = collect(server.client().client.getConfiguration({ commitId: "echo" }));
    const other = collect(server.client("glagent-other").client.getConfiguration({ commitId: "echo" }));
    await waitFor(() => server.started.length === 3);
    server.platform.revoke("glagent-good");
    for (const revoked of [await good, await good2]) {
      expect(revoked.messages).to.deep.equal(["agent 7"]);
      expect(revoked.error?.code).to.equal(Code.Unauthenticated);
      expect(revoked.error?.rawMessage).to.equal("agent token revoked");
    }
    expect(server.ended).to.have.length(2);
    server.shutdown.abort();
    const shutDown = await other;
    expect(shutDown.messages).to.deep.equal(["agent 8"]);
    expect(shutDown.error?.code).to.equal(Code.Unavailable);
    expect(shutDown.error?.rawMessage).to.equal("KAS is shutting down");
    expect(server.ended).to.have.length(3);
  });

  it("fails a request or a response above the size limit with RESOURCE_EXHAUSTED", async () => {
    const oversize = await rawCall(server.url, Buffer.concat([frameHeader((1 << 20) + 1), Buffer.alloc(16)]));
    expect(oversize.status).to.equal(String(Code.ResourceExhausted));
    expect(server.started).to.have.length(0);
    const { client } = server.client();
    const big = await collect(client.getConfiguration({ commitId: "big" }));
    expect(big.error?.code).to.equal(Code.ResourceExhausted);
  });

  it("reads a request no larger than maxRequestBytes, while responses may use maxMessageBytes", async () => {
    const small = await startServer(1 << 20, 1024);
    try {
      const oversize = await rawCall(small.url, Buffer.concat([frameHeader(1025), Buffer.alloc(1025)]));
      expect(oversize.status).to.equal(String(Code.ResourceExhausted));
      expect(small.started).to.have.length(0);
      const { client } = small.client();
      const ok = await collect(client.getConfiguration({ commitId: "count:1:100000" }));
      expect(ok.error).to.equal(undefined);
      expect(ok.messages).to.have.length(1);
    } finally {
      await small.close();
    }
  });

  it("answers malformed requests with their gRPC status, as connect-es does", async () => {
    const request = toBinary(ConfigurationRequestSchema, create(ConfigurationRequestSchema, { commitId: "echo" }));
    const invalid = await rawCall(server.url, frame(Buffer.from([0xff, 0xff, 0xff])));
    expect(invalid.status).to.equal(String(Code.Internal));
    expect(invalid.message).to.match(/^parse binary: /);
    const truncated = await rawCall(server.url, frame(request).subarray(0, 7));
    expect(truncated).to.deep.equal({ status: String(Code.InvalidArgument), message: "protocol error: incomplete envelope" });
    const none = await rawCall(server.url, Buffer.alloc(0));
    expect(none).to.deep.equal({ status: String(Code.Unimplemented), message: "protocol error: missing input message for server_streaming method" });
    const two = await rawCall(server.url, Buffer.concat([frame(request), frame(request)]));
    expect(two).to.deep.equal({ status: String(Code.Unimplemented), message: "protocol error: received extra input message for server_streaming method" });
    const encoding = await rawCall(server.url, frame(request), { "grpc-encoding": "br" });
    expect(encoding.status).to.equal(String(Code.Unimplemented));
    const gzipped = gzipSync(request);
    const compressed = await rawCall(server.url, Buffer.concat([Buffer.from([1]), frameHeader(gzipped.byteLength).subarray(1), gzipped]), {
      "grpc-encoding": "gzip",
      "grpc-timeout": "1m",
    });
    // A valid gzip request with a deadline: the deadline ends the call ("echo" stays open).
    expect(compressed.status).to.equal(String(Code.DeadlineExceeded));
  });

  it("declines other protocols (Connect), which go to the request handler", async () => {
    const client = createClient(AgentConfiguration, createConnectTransport({ baseUrl: server.url, httpVersion: "2", interceptors: [bearer("glagent-good")] }));
    const result = await collect(client.getConfiguration({ commitId: "echo" }));
    expect(result.error).to.be.instanceOf(ConnectError);
    expect(server.fallback()).to.equal(1);
    expect(server.started).to.have.length(0);
  });
});
