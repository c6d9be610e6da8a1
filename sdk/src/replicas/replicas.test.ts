import { expect } from "chai";
import pino from "pino";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { Redis } from "ioredis";
import { createAgent, type Agent } from "../agent/create-agent.js";
import { EchoService } from "../gen/kasbridge/echo/v1/echo_pb.js";
import { ExpiringValueSchema } from "../gen/gitlab/agent/redistool/redistool_pb.js";
import { internalApiClientInterceptor } from "../kas/internal-api-auth.js";
import { createKasServer, type KasServer } from "../kas/kas-server.js";
import { agentRegistrarAgentModule } from "../modules/agent_registrar/agent/agent-registrar-module.js";
import { echoAgentModule } from "../modules/echo/agent/echo-service.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { connectRedis } from "../redis/redis-connection.js";
import { int64Key } from "../redis/redis-keys.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { deleteKeys, redisConnection, TEST_REDIS_URL, uniqueRedisName } from "@kasbridge/testing/redis";
import { rejection, waitFor } from "@kasbridge/testing/wait";

describe("KAS replicas on Redis: registry and routing through the private API", function () {
  this.timeout(30_000);
  const logger = pino({ level: "silent" });
  const platformSecret = new Uint8Array(32).fill(5);
  const privateSecret = new Uint8Array(32).fill(6);
  const prefix = uniqueRedisName("kasbridge-replicas");
  const platform = new StaticPlatformClient();
  const cleanups = new Cleanup();
  let redis: Redis;
  const replicas: KasServer[] = [];

  platform.addToken("glagent-r1", { agentId: 21, agentName: "r1", projectId: 3, projectPath: "g/r", defaultBranch: "main", tokenId: 210 });
  platform.addToken("glagent-r2", { agentId: 22, agentName: "r2", projectId: 3, projectPath: "g/r", defaultBranch: "main", tokenId: 220 });

  async function startReplica(): Promise<KasServer> {
    const client = await connectRedis({ url: TEST_REDIS_URL });
    const kas = await createKasServer({
      platform,
      logger,
      agentApi: { port: 0 },
      internalApi: { port: 0, jwtSecret: platformSecret },
      privateApi: { port: 0, jwtSecret: privateSecret },
      redis: { client, keyPrefix: prefix },
      tunnelFindTimeoutMs: 5_000,
    });
    cleanups.add(() => client.quit());
    cleanups.add(() => kas.close(100));
    replicas.push(kas);
    return kas;
  }

  function startAgentOn(kas: KasServer, token: string): Agent {
    const agent = createAgent({ kasAddress: kas.agentApi.url("grpc"), token, logger, modules: [agentRegistrarAgentModule(), echoAgentModule()] });
    agent.start();
    cleanups.add(() => agent.stop(100));
    return agent;
  }

  function echoVia(kas: KasServer, agentId: number): Client<typeof EchoService> {
    const baseUrl = kas.addresses.internal.replace(/^grpc:/, "http:");
    const sessionManager = new Http2SessionManager(baseUrl);
    cleanups.add(() => sessionManager.abort());
    return createClient(EchoService, createGrpcTransport({ baseUrl, sessionManager, interceptors: [internalApiClientInterceptor(platformSecret, agentId)] }));
  }

  before(async () => {
    redis = await redisConnection();
    cleanups.add(() => redis.quit());
    cleanups.add(() => deleteKeys(redis, prefix));
  });
  after(() => cleanups.run());

  it("registers the agent's tunnels under GitLab's key, and routes calls from a replica without tunnels", async () => {
    const [a, b] = [await startReplica(), await startReplica()];
    startAgentOn(a, "glagent-r1");
    await waitFor(() => a.registry.stats().idleTunnels >= 1);
    const key = int64Key(`${prefix}:tunnel_tracker2:kas_by_agent_id:`, 21);
    await waitFor(async () => (await redis.hexists(key, a.addresses.private)) === 1, undefined, "A's URL in the agent's hash");
    const value = fromBinary(ExpiringValueSchema, (await redis.hgetallBuffer(key))[a.addresses.private]!);
    expect(Number(value.expiresAt)).to.be.greaterThan(Date.now() / 1000 + 200);
    expect(await redis.pttl(key)).to.be.within(1, 300_000);
    expect(b.registry.stats().idleTunnels).to.equal(0);

    const echo = echoVia(b, 21);
    const reply = await echo.echo({ payload: new TextEncoder().encode("through B") });
    expect(new TextDecoder().decode(reply.payload)).to.equal("through B");

    // Server streaming, client streaming and bidi, with backpressure across both hops.
    let received = 0;
    for await (const m of echo.serverStream({ count: 200, size: 64 * 1024 })) received += m.payload.byteLength;
    expect(received).to.equal(200 * 64 * 1024);
    const sent = (async function* () {
      for (let i = 0; i < 50; i++) yield { payload: new Uint8Array(1000) };
    })();
    expect((await echo.clientStream(sent)).totalBytes).to.equal(50_000n);
    const words = ["a", "b", "c"];
    const out: string[] = [];
    for await (const m of echo.bidi((async function* () {
      for (const w of words) yield { payload: new TextEncoder().encode(w) };
    })())) out.push(new TextDecoder().decode(m.payload));
    expect(out).to.deep.equal(words);

    // The agent's errors, trailers included, arrive as they would locally.
    const err = await rejection(echo.fail({ code: Code.FailedPrecondition, message: "nope" }));
    expect(err.code).to.equal(Code.FailedPrecondition);
    expect(err.rawMessage).to.equal("nope");
    expect(err.metadata.get("fail-trailer")).to.equal("present");
  });

  it("lists every replica's agent connections from Redis on each replica", async () => {
    const [a, b] = replicas;
    await waitFor(async () => (await b!.connections.listConnections(21)).length === 1, undefined, "A's connection listed by B");
    const [connection] = await b!.connections.listConnections(21);
    expect(connection!.kasInstance).to.equal(a!.kasInstance);
    expect(connection!.projectId).to.equal(3);
  });

  it("cancels the agent's handler when the caller cancels a forwarded stream", async () => {
    const [a, b] = replicas;
    const abort = new AbortController();
    const echo = echoVia(b!, 21);
    let n = 0;
    const err = await rejection(
      (async () => {
        for await (const _ of echo.serverStream({ count: 1_000_000, size: 1000 }, { signal: abort.signal })) if (++n === 10) abort.abort();
      })(),
    );
    expect(err.code).to.equal(Code.Canceled);
    // The tunnel at A was used up and closed: nothing stays busy.
    await waitFor(() => a!.registry.stats().busyTunnels === 0, undefined, "A's tunnel released");
  });

  it("waits for a tunnel that appears on another replica, then forwards there", async () => {
    const [a, b] = replicas;
    const echo = echoVia(a!, 22);
    const call = echo.echo({ payload: new Uint8Array([7]) }, { timeoutMs: 15_000 });
    startAgentOn(b!, "glagent-r2");
    expect((await call).payload).to.deep.equal(new Uint8Array([7]));
  });

  it("fails with GitLab's error when no replica gets a tunnel of the agent in time", async () => {
    const [, b] = replicas;
    const err = await rejection(echoVia(b!, 99).echo({}));
    expect(err.code).to.equal(Code.DeadlineExceeded);
    expect(err.rawMessage).to.equal("Agent connection not found. Is agent up to date and connected?");
  });

  it("skips the entries of replicas that died: expired ones are deleted, unreachable ones passed over", async () => {
    const [a, b] = replicas;
    const key = int64Key(`${prefix}:tunnel_tracker2:kas_by_agent_id:`, 21);
    const expired = toBinary(ExpiringValueSchema, create(ExpiringValueSchema, { expiresAt: BigInt(Math.floor(Date.now() / 1000) - 10) }));
    const live = toBinary(ExpiringValueSchema, create(ExpiringValueSchema, { expiresAt: BigInt(Math.floor(Date.now() / 1000) + 300) }));
    // A replica that died minutes ago, and one killed just now (nothing listens on port 1).
    await redis.hset(key, "grpc://127.0.0.1:9", Buffer.from(expired), "grpc://127.0.0.1:1", Buffer.from(live));
    // B has no tunnel of agent 21; A has.
    expect(b!.registry.stats().agents).to.equal(1);
    const reply = await echoVia(b!, 21).echo({ payload: new Uint8Array([1, 2]) }, { timeoutMs: 10_000 });
    expect(reply.payload).to.deep.equal(new Uint8Array([1, 2]));
    await waitFor(async () => (await redis.hexists(key, "grpc://127.0.0.1:9")) === 0, undefined, "the expired entry deleted");
    expect(await redis.hexists(key, a!.addresses.private)).to.equal(1);
    await redis.hdel(key, "grpc://127.0.0.1:1");
  });

  it("removes a replica's entries when it shuts down", async () => {
    const c = await startReplica();
    startAgentOn(c, "glagent-r1");
    const key = int64Key(`${prefix}:tunnel_tracker2:kas_by_agent_id:`, 21);
    await waitFor(async () => (await redis.hexists(key, c.addresses.private)) === 1, undefined, "C registered");
    await c.close(100);
    expect(await redis.hexists(key, c.addresses.private)).to.equal(0);
  });
});
