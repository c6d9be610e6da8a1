import { readFileSync } from "node:fs";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { createRedisClient, redactedUrl, type RedisConnectionOptions } from "@kasbridge/sdk/replicas";
import type { RedisConfig } from "./config.js";

/**
 * The reference kas's Redis connections, from its one Redis setting: `client` for commands (the
 * registries, the rate limit, publishing) and `subscriber` for pub/sub channels (events between
 * replicas, GitLab's kas_events), which Redis requires on a connection of its own.
 */
export interface RedisConnections {
  readonly client: Redis;
  readonly subscriber: Redis;
  /** Prefix of every key (GitLab's redis.key_prefix). */
  readonly keyPrefix: string;
  close(): Promise<void>;
}

/**
 * Opens both connections. kas starts also while Redis is down: the connections keep trying, and
 * kas serves the agents connected to it until Redis is back (logged once; see RedisAvailability).
 */
export async function openRedis(config: RedisConfig, logger: Logger): Promise<RedisConnections> {
  const options = redisConnectionOptions(config);
  const client = createRedisClient({ ...options, connectionName: "kas" });
  const subscriber = createRedisClient({ ...options, connectionName: "kas-subscriber" }, "subscriber");
  for (const connection of [client, subscriber]) connection.on("error", () => {});
  const url = redactedUrl(config.url);
  await Promise.all(
    [client, subscriber].map((connection) =>
      connection.connect().catch((error: unknown) => {
        logger.error({ redis: url, err: (error as Error).message }, "Redis unavailable at start: serving agents connected to this replica only until it answers");
      }),
    ),
  );
  return {
    client,
    subscriber,
    keyPrefix: config.keyPrefix,
    async close() {
      await Promise.all([client, subscriber].map((connection) => connection.quit().catch(() => connection.disconnect())));
    },
  };
}

function redisConnectionOptions(config: RedisConfig): RedisConnectionOptions {
  const options: RedisConnectionOptions = { url: config.url };
  if (config.passwordFile) options.password = readFileSync(config.passwordFile, "utf8").replace(/\r?\n$/, "");
  if (config.tls) {
    options.tls = {
      ca: config.tls.caFile ? readFileSync(config.tls.caFile) : undefined,
      cert: config.tls.certFile ? readFileSync(config.tls.certFile) : undefined,
      key: config.tls.keyFile ? readFileSync(config.tls.keyFile) : undefined,
    };
  }
  return options;
}
