import http2 from "node:http2";
import { expect } from "chai";
import pino from "pino";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createAgent, type Agent } from "../agent/create-agent.js";
import { EchoRequestSchema, EchoResponseSchema, EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { GatewayKasResponseSchema, type GatewayKasResponse } from "../gen/gitlab/agent/kas/kasapp_pb.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { GrpcClientStream } from "../transport/grpc-client-stream.js";
import { KAS_JWT_AUDIENCE, KAS_JWT_ISSUER, signJwt } from "../auth/jwt.js";
import { internalApiClientInterceptor, privateApiClientInterceptor } from "./internal-api-auth.js";
import { createKasServer, type KasServer } from "./kas-server.js";
import { rejection, waitFor } from "@kasbridge/testing/wait";
import { agentRegistrarAgentModule } from "../modules/agent_registrar/agent/agent-registrar-module.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";

describe("KAS private (kas-to-kas) API over real HTTP/2", function () {
  this.timeout(20_000);
  const logger = pino({ level: "silent" });
  const platformSecret = new Uint8Array(32).fill(3);
  const privateSecret = new Uint8Array(32).fill(4);
  const platform = new StaticPlatformClient();
  let kas: KasServer;
  const agents: Agent[] = [];
  const sessions: Http2SessionManager[] = [];
  let session: http2.ClientHttp2Session;

  function startAgent(token: string): void {
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token, logger, podName: "peer-pod", modules: [agentRegistrarAgentModule(), echoAgentModule()] });
    agent.start();
    agents.push(agent);
  }

  before(async () => {
    platform.addToken("glagent-peer", { agentId: 11, agentName: "peer", projectId: 2, projectPath: "g/p", defaultBranch: "main", tokenId: 110 });
    platform.addToken("glagent-late", { agentId: 13, agentName: "late", projectId: 2, projectPath: "g/p", defaultBranch: "main", tokenId: 130 });
    kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: platformSecret },
      privateApi: { port: 0, jwtSecret: privateSecret },
    });
    startAgent("glagent-peer");
    await waitFor(() => kas.registry.stats().idleTunnels >= 2, 10_000);
    session = http2.connect(`http://127.0.0.1:${kas.privateApiAddress!.port}`);
    session.on("error", () => {});
  });

  after(async () => {
    session.destroy();
    for (const s of sessions) s.abort();
    for (const agent of agents) await agent.stop(100);
    await kas.close(100);
  });

  /** A router's call to the gateway: GatewayKasResponse messages in, raw messages out. */
  async function routerCall(agentId: number, method = "/kasbridge.echo.v1.EchoService/Echo") {
    const token = await signJwt(privateSecret, { issuer: KAS_JWT_ISSUER, audience: KAS_JWT_AUDIENCE });
    const stream = session.request({
      ":method": "POST",
      ":path": method,
      ...GrpcClientStream.requestHeaders({}),
      authorization: `Bearer ${token}`,
      "kas-hop-routing-agent-id": String(agentId),
      "x-caller": "kept",
    });
    return new GrpcClientStream<Uint8Array, GatewayKasResponse>(Promise.resolve(stream), {
      encode: (b) => b,
      decode: (b) => fromBinary(GatewayKasResponseSchema, b),
      readMaxBytes: 1 << 20,
      writeMaxBytes: 1 << 20,
    });
  }

  async function nextCase(call: Awaited<ReturnType<typeof routerCall>>): Promise<string | undefined> {
    const r = await call.next();
    return r.done ? undefined : r.value.msg.case;
  }

  it("answers in GitLab's gateway sequence: tunnel_ready, then after StartStreaming header, message, trailer", async () => {
    const call = await routerCall(11);
    expect(await nextCase(call)).to.equal("tunnelReady");
    await call.send(new Uint8Array(0)); // StartStreaming {}
    await call.send(toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload: new Uint8Array([42]) })));
    call.closeSend();
    const header = await call.next();
    expect(header.value?.msg.case).to.equal("header");
    const message = await call.next();
    expect(message.value?.msg.case).to.equal("message");
    const data = message.value!.msg.case === "message" ? message.value!.msg.value.data : new Uint8Array();
    expect(fromBinary(EchoResponseSchema, data).payload).to.deep.equal(new Uint8Array([42]));
    expect(await nextCase(call)).to.equal("trailer");
    expect(await nextCase(call)).to.equal(undefined);
  });

  it("says no_tunnel first while it has none, then tunnel_ready when the agent connects", async () => {
    const call = await routerCall(13);
    expect(await nextCase(call)).to.equal("noTunnel");
    startAgent("glagent-late");
    expect(await nextCase(call)).to.equal("tunnelReady");
    call.closeSend();
    expect(await nextCase(call)).to.equal(undefined);
  });

  it("puts the tunnel back when the router ends its request instead of StartStreaming", async () => {
    await waitFor(() => kas.registry.stats().idleTunnels >= 4);
    const idle = kas.registry.stats().idleTunnels;
    const call = await routerCall(11);
    expect(await nextCase(call)).to.equal("tunnelReady");
    expect(kas.registry.stats().idleTunnels).to.equal(idle - 1);
    call.closeSend();
    expect(await nextCase(call)).to.equal(undefined);
    await waitFor(() => kas.registry.stats().idleTunnels === idle, undefined, "the tunnel idle again");
    expect(kas.registry.stats().busyTunnels).to.equal(0);
  });

  function echoVia(address: { port: number }, interceptor: Interceptor) {
    const baseUrl = `http://127.0.0.1:${address.port}`;
    const sessionManager = new Http2SessionManager(baseUrl);
    sessions.push(sessionManager);
    return createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager, interceptors: [interceptor] }));
  }

  it("refuses the platform's JWT (issuer gitlab) and JWTs signed with another secret", async () => {
    const platformJwt = echoVia(kas.privateApiAddress!, internalApiClientInterceptor(privateSecret, 11));
    const err1 = await rejection(platformJwt.echo({ payload: new Uint8Array(1) }));
    expect(err1.code).to.equal(Code.Unauthenticated);
    expect(err1.rawMessage).to.equal("private API JWT authentication invalid");

    const wrongSecret = echoVia(kas.privateApiAddress!, privateApiClientInterceptor(platformSecret, 11));
    expect((await rejection(wrongSecret.echo({ payload: new Uint8Array(1) }))).code).to.equal(Code.Unauthenticated);

    // ... and the internal API does not take the replicas' secret.
    const onInternal = echoVia(kas.internalApiAddress, privateApiClientInterceptor(privateSecret, 11));
    const err3 = await rejection(onInternal.echo({ payload: new Uint8Array(1) }));
    expect(err3.code).to.equal(Code.Unauthenticated);
    expect(err3.rawMessage).to.equal("internal API JWT authentication invalid");
  });

  it("is off unless configured", async () => {
    const other = await createKasServer({
      platform: new StaticPlatformClient(),
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: platformSecret },
    });
    try {
      expect(other.privateApiAddress).to.equal(undefined);
    } finally {
      await other.close(0);
    }
  });
});
