import { expect } from "chai";
import pino from "pino";
import type { Redis } from "ioredis";
import { create } from "@bufbuild/protobuf";
import { ConfigurationFileSchema } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import { Code } from "@connectrpc/connect";
import type { TokenRevocation } from "../platform-client/platform-client.js";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { redisKeys } from "../redis/redis-keys.js";
import { connectRedis, createRedisClient } from "../redis/redis-connection.js";
import { RedisAvailability } from "../redis/redis-availability.js";
import { AgentAuthenticator } from "../kas/agent-authenticator.js";
import { RedisConnectionLimiter } from "./connection-limiter.js";
import { RedisReplicaEvents, replicatedPlatformClient } from "./replica-events.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { deleteKeys, redisConnection, TEST_REDIS_URL, uniqueRedisName } from "@kasbridge/testing/redis";
import { rejection, waitFor } from "@kasbridge/testing/wait";

describe("KAS replicas on Redis: events between replicas and the shared connection limit", function () {
  this.timeout(20_000);
  const logger = pino({ level: "silent" });
  const prefix = uniqueRedisName("kasbridge-events");
  const keys = redisKeys(prefix);
  const cleanups = new Cleanup();
  let redis: Redis;

  before(async () => {
    redis = await redisConnection();
    cleanups.add(() => redis.quit());
    cleanups.add(() => deleteKeys(redis, prefix));
  });
  after(() => cleanups.run());

  /** One replica's view: its own platform (changes happen there) and its Redis connections. */
  async function replica() {
    const platform = new StaticPlatformClient();
    const publisher = await connectRedis({ url: TEST_REDIS_URL });
    const subscriber = createRedisClient({ url: TEST_REDIS_URL }, "subscriber");
    subscriber.on("error", () => {});
    await subscriber.connect();
    const events = new RedisReplicaEvents({ publisher, subscriber, channel: keys.replicaEvents(), logger });
    await events.start();
    const client = replicatedPlatformClient(platform, events);
    cleanups.add(async () => {
      client.close();
      await events.close();
      publisher.disconnect();
      subscriber.disconnect();
    });
    return { platform, client };
  }

  it("delivers a revocation and a configuration change made on one replica to every replica once", async () => {
    const [a, b] = [await replica(), await replica()];
    const seen = { a: [] as TokenRevocation[], b: [] as TokenRevocation[], configA: [] as number[], configB: [] as number[] };
    const stop = new AbortController();
    cleanups.add(() => stop.abort());
    a.client.watchTokenRevocations((r) => seen.a.push(r), stop.signal);
    b.client.watchTokenRevocations((r) => seen.b.push(r), stop.signal);
    a.client.watchAgentConfigurations!((id) => seen.configA.push(id), stop.signal);
    b.client.watchAgentConfigurations!((id) => seen.configB.push(id), stop.signal);

    a.platform.publish({ kind: "ci_job", jobId: 77 });
    a.platform.publish({ kind: "agent_token", agentId: 5, tokenId: 50 });
    b.platform.setConfiguration(9, "abc", create(ConfigurationFileSchema));
    await waitFor(() => seen.b.length === 2 && seen.configA.length === 1, undefined, "the events on the other replica");
    expect(seen.b).to.deep.equal([{ kind: "ci_job", jobId: 77 }, { kind: "agent_token", agentId: 5, tokenId: 50 }]);
    expect(seen.configA).to.deep.equal([9]);
    // Each replica hears its own events once (locally), not again from Redis.
    expect(seen.a).to.have.length(2);
    expect(seen.configB).to.deep.equal([9]);
  });

  it("counts a token's calls on every replica against one limit, in GitLab's key", async () => {
    const limiters = await Promise.all(
      [0, 1].map(async () => {
        const client = await connectRedis({ url: TEST_REDIS_URL });
        cleanups.add(() => client.quit());
        return new RedisConnectionLimiter(client, keys, 3, new RedisAvailability(client, logger));
      }),
    );
    const platform = new StaticPlatformClient();
    platform.addToken("glagent-limited-token-0123456789", { agentId: 8, agentName: "l", projectId: 1, projectPath: "g/l", defaultBranch: "main" });
    const [a, b] = limiters.map((limiter) => new AgentAuthenticator({ platform, logger, limiter }));
    cleanups.add(() => (a!.close(), b!.close()));
    const header = new Headers({ authorization: "Bearer glagent-limited-token-0123456789" });
    await a!.authenticate(header);
    await b!.authenticate(header);
    await a!.authenticate(header);
    const refused = await rejection(b!.authenticate(header));
    expect(refused.code).to.equal(Code.ResourceExhausted);
    expect(refused.rawMessage).to.equal("new connection rate limit exhausted for this agent, try again later");
    const [key] = await redis.keysBuffer(`${prefix}:agent_limit:*`);
    expect(key!.length).to.equal(`${prefix}:agent_limit:`.length + 32 + 2);
    expect(await redis.get(key!)).to.equal("3");
    expect(await redis.ttl(key!)).to.be.within(1, 59);
  });
});
