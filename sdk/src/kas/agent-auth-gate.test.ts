import http2 from "node:http2";
import net from "node:net";
import type { Writable } from "node:stream";
import { expect } from "chai";
import { afterEach, before, describe, it } from "mocha";
import pino from "pino";
import { create } from "@bufbuild/protobuf";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { AgentRegistrar } from "../gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
import { ConnectRequestSchema, ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { HUNG_MS, rejection, streamRejection, within } from "@kasbridge/testing/wait";
import { bearer } from "../grpc/interceptors.test-support.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { createKasServer, type KasServer } from "./kas-server.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
const registerPath = `/${AgentRegistrar.typeName}/${AgentRegistrar.method.register.name}`;
/** Above the agent API's stream window (4 MiB), below its message limit (16 MiB). */
const bigBodyBytes = 12 * 1024 * 1024;

describe("agent API: authentication before the body (authenticateBeforeBody)", function () {
  this.timeout(30_000);
  const cleanup = new Cleanup();
  let kas: KasServer;
  before(async () => {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-good", { agentId: 1, agentName: "a", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 10 });
    kas = await createKasServer({ platform, logger, agentApi: { port: 0 }, internalApi: { port: 0, jwtSecret: new Uint8Array(32).fill(1) } });
  });
  after(() => kas.close(0));
  afterEach(() => cleanup.run());

  const transports: Record<string, () => Transport> = {
    "Connect over HTTP/1.1": () => createConnectTransport({ baseUrl: kas.agentApi.url("http"), httpVersion: "1.1", interceptors: [bearer("glagent-bad")] }),
    "Connect over HTTP/2": () => createConnectTransport({ baseUrl: kas.agentApi.url("http"), httpVersion: "2", interceptors: [bearer("glagent-bad")] }),
    "gRPC-Web over HTTP/1.1": () => createGrpcWebTransport({ baseUrl: kas.agentApi.url("http"), httpVersion: "1.1", interceptors: [bearer("glagent-bad")] }),
    "gRPC-Web over HTTP/2": () => createGrpcWebTransport({ baseUrl: kas.agentApi.url("http"), httpVersion: "2", interceptors: [bearer("glagent-bad")] }),
    "gRPC over HTTP/2": () => createGrpcTransport({ baseUrl: kas.agentApi.url("http"), interceptors: [bearer("glagent-bad")] }),
  };

  for (const [name, transport] of Object.entries(transports)) {
    it(`answers a stranger UNAUTHENTICATED in its own protocol: ${name}`, async () => {
      const registrar = createClient(AgentRegistrar, transport());
      const err = await rejection(registrar.register({ podId: 1n }));
      expect(err.code).to.equal(Code.Unauthenticated);
      if (name.includes("HTTP/2")) {
        const tunnel = createClient(ReverseTunnel, transport());
        const descriptor = create(ConnectRequestSchema, { msg: { case: "descriptor", value: { agentDescriptor: {} } } });
        const streamErr = await streamRejection(tunnel.connect((async function* () { yield descriptor; })()));
        expect(streamErr.code).to.equal(Code.Unauthenticated);
      }
    });
  }

  it("does not read a stranger's body over HTTP/2: the answer comes, the stream is reset, most of the body was never taken", async () => {
    const session = cleanup.track(http2.connect(kas.agentApi.url("http")));
    session.on("error", () => {});
    const stream = session.request({ ":method": "POST", ":path": registerPath, "content-type": "application/proto", authorization: "Bearer glagent-bad" });
    stream.on("error", () => {});
    const status = new Promise<number | undefined>((resolve) => {
      stream.once("response", (headers) => resolve(Number(headers[":status"])));
      stream.once("close", () => resolve(undefined));
    });
    const body: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => body.push(chunk));
    const closed = new Promise<void>((resolve) => stream.once("close", resolve));
    writeWithBackpressure(stream, bigBodyBytes);
    expect(await within(HUNG_MS, status, "the answer")).to.equal(401);
    await within(HUNG_MS, closed, "the stream's end");
    expect(JSON.parse(Buffer.concat(body).toString())).to.deep.include({ code: "unauthenticated" });
    expect(stream.rstCode).to.equal(http2.constants.NGHTTP2_NO_ERROR);
    // Without the gate connect-es would have read all of it (it is under the message limit).
    expect(stream.writableFinished, "the whole body was taken").to.equal(false);
  });

  it("does not read a stranger's body over HTTP/1.1: the answer comes, then the connection closes", async () => {
    const socket = cleanup.track(net.connect(kas.agentApi.address.port, "127.0.0.1"));
    let answer = "";
    socket.on("data", (d: Buffer) => (answer += d.toString()));
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.once("close", resolve));
    socket.write(
      `POST ${registerPath} HTTP/1.1\r\nHost: kas\r\nContent-Type: application/proto\r\nAuthorization: Bearer glagent-bad\r\nContent-Length: ${bigBodyBytes}\r\n\r\n`,
    );
    const sent = writeWithBackpressure(socket, bigBodyBytes);
    await within(HUNG_MS, closed, "the connection to close");
    expect(answer).to.match(/^HTTP\/1\.1 401 /);
    expect(answer.toLowerCase()).to.include("connection: close");
    expect(sent(), "the whole body was taken").to.be.below(bigBodyBytes);
  });
});

/**
 * Writes a RegisterRequest of `total` bytes (a valid message: an unknown bytes field holds the
 * bulk) as the peer takes it, until it stops taking it; returns how many bytes went out so far.
 */
function writeWithBackpressure(target: Writable, total: number): () => number {
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  // Field 15, length-delimited, its 4-byte varint length: the rest of the body.
  const rest = total - 5;
  const head = Buffer.from([0x7a, (rest & 0x7f) | 0x80, ((rest >> 7) & 0x7f) | 0x80, ((rest >> 14) & 0x7f) | 0x80, rest >> 21]);
  target.write(head);
  let sent = head.length;
  const pump = (): void => {
    while (sent < total && !target.destroyed) {
      const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
      sent += piece.length;
      if (!target.write(piece)) return void target.once("drain", pump);
    }
    if (sent >= total) target.end();
  };
  pump();
  return () => sent;
}
