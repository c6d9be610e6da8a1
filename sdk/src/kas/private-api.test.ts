import { expect } from "chai";
import pino from "pino";
import { Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createAgent } from "../agent/create-agent.js";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
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
  let kas: KasServer;
  let agent: ReturnType<typeof createAgent>;
  const sessions: Http2SessionManager[] = [];

  before(async () => {
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-peer", { agentId: 11, agentName: "peer", projectId: 2, projectPath: "g/p", defaultBranch: "main", tokenId: 110 });
    kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: platformSecret },
      privateApi: { port: 0, jwtSecret: privateSecret },
    });
    agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-peer", logger, podName: "peer-pod", modules: [agentRegistrarAgentModule(), echoAgentModule()] });
    agent.start();
    await waitFor(() => kas.registry.stats().idleTunnels >= 1, 10_000);
  });

  after(async () => {
    for (const s of sessions) s.abort();
    await agent.stop(100);
    await kas.close(100);
  });

  function echoVia(address: { port: number }, interceptor: Interceptor) {
    const baseUrl = `http://127.0.0.1:${address.port}`;
    const sessionManager = new Http2SessionManager(baseUrl);
    sessions.push(sessionManager);
    return createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager, interceptors: [interceptor] }));
  }

  it("listens on its own port and routes a peer's call to an agent connected here", async () => {
    expect(kas.privateApiAddress).to.not.equal(undefined);
    expect(kas.privateApiAddress!.port).to.not.equal(kas.internalApiAddress.port);
    const client = echoVia(kas.privateApiAddress!, privateApiClientInterceptor(privateSecret, 11));
    const reply = await client.echo({ payload: new TextEncoder().encode("from another replica") });
    expect(new TextDecoder().decode(reply.payload)).to.equal("from another replica");
  });

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

  it("names an agent that is not connected to this replica", async () => {
    const client = echoVia(kas.privateApiAddress!, privateApiClientInterceptor(privateSecret, 12));
    const err = await rejection(client.echo({ payload: new Uint8Array(1) }, { timeoutMs: 500 }));
    expect(err.code).to.equal(Code.Unavailable);
    expect(err.rawMessage).to.contain("12");
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
