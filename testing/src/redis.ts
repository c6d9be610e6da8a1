// Real Redis for tests (a *.test-support.ts file: no tests). The machine runs Redis on :6379.
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

export const TEST_REDIS_URL = process.env.KAS_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** A new connection to the test Redis; fails with instructions when Redis is not reachable. */
export async function redisConnection(): Promise<Redis> {
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5000 });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new Error(`Redis is not reachable at ${TEST_REDIS_URL} (${(err as Error).message}). Start it with: redis-server --daemonize yes (or set KAS_TEST_REDIS_URL).`, { cause: err });
  }
  return redis;
}

/** A channel or key name no other test run uses. */
export function uniqueRedisName(prefix: string): string {
  return `${prefix}:test-${randomBytes(6).toString("hex")}`;
}
