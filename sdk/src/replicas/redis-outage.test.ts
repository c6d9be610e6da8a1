import { expect } from "chai";
import pino from "pino";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { createAgent } from "../agent/create-agent.js";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { internalApiClientInterceptor } from "../kas/internal-api-auth.js";
import { createKasServer, type KasServer } from "../kas/kas-server.js";
import { agentRegistrarAgentModule } from "../modules/agent_registrar/agent/agent-registrar-module.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { connectRedis } from "../redis/redis-connection.js";
import { int64Key } from "../redis/redis-keys.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { startOwnRedis, type OwnRedis } from "@kasbridge/testing/redis";
import { waitFor } from "@kasbridge/testing/wait";

describe("KAS replicas when Redis goes away and comes back", function () {
  this.timeout(30_000);
  const platformSecret = new Uint8Array(32).fill(7);
  const privateSecret = new Uint8Array(32).fill(8);
  const cleanups = new Cleanup();
  const logLines: Array<{ msg: string; level: number }> = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void logLines.push(JSON.parse(line)) });
  let own: OwnRedis;
  let kas: KasServer;
  let observer: Redis;
  const key = int64Key("gitlab-kas:tunnel_tracker2:kas_by_agent_id:", 31);
  const connectionsKey = int64Key("gitlab-kas:agent_tracker2:conn_by_agent_id:", 31);

  before(async () => {
    own = await startOwnRedis();
    cleanups.add(() => own.stop());
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-outage", { agentId: 31, agentName: "o", projectId: 4, projectPath: "g/o", defaultBranch: "main", tokenId: 310 });
    const client = await connectRedis({ url: own.url, maxReconnectDelayMs: 200 });
    cleanups.add(() => client.disconnect());
    kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: platformSecret },
      privateApi: { port: 0, jwtSecret: privateSecret },
      redis: { client },
    });
    cleanups.add(() => kas.close(100));
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token: "glagent-outage", logger: pino({ level: "silent" }), modules: [agentRegistrarAgentModule(), echoAgentModule()] });
    agent.start();
    cleanups.add(() => agent.stop(100));
    observer = new Redis(own.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
    observer.on("error", () => {});
    await observer.connect();
    cleanups.add(() => observer.disconnect());
    await waitFor(async () => (await observer.hexists(key, kas.addresses.private)) === 1, undefined, "the agent's tunnels registered");
    await waitFor(async () => (await observer.hlen(connectionsKey)) === 1, undefined, "the agent's connection registered");
  });
  after(() => cleanups.run());

  function echo() {
    const baseUrl = kas.addresses.internal.replace(/^grpc:/, "http:");
    const sessionManager = new Http2SessionManager(baseUrl);
    cleanups.add(() => sessionManager.abort());
    return createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager, interceptors: [internalApiClientInterceptor(platformSecret, 31)] }));
  }

  const outageLogs = () => logLines.filter((l) => l.msg.startsWith("Redis unavailable")).length;

  it("keeps serving its own agents while Redis is down and logs the outage once", async () => {
    await own.stop();
    const client = echo();
    for (let i = 0; i < 20; i++) {
      const reply = await client.echo({ payload: new Uint8Array([i]) });
      expect(reply.payload).to.deep.equal(new Uint8Array([i]));
    }
    // Connections are listed from this replica's own tracker meanwhile.
    expect(await kas.connections.listConnections(31)).to.have.length(1);
    expect(outageLogs()).to.equal(1);
  });

  it("rebuilds its registrations when Redis comes back empty", async () => {
    await own.start();
    await waitFor(async () => (await observer.hexists(key, kas.addresses.private).catch(() => 0)) === 1, 15_000, "the tunnels registered again");
    await waitFor(async () => (await observer.hlen(connectionsKey).catch(() => 0)) === 1, undefined, "the connection registered again");
    expect(logLines.filter((l) => l.msg.startsWith("Redis available again"))).to.have.length(1);
    expect(outageLogs()).to.equal(1);
    expect(await kas.connections.listConnections(31)).to.have.length(1);
  });
});
