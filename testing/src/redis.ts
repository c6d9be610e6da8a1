// Real Redis for tests. The machine runs one on :6379, shared by every test run: each run uses its
// own key prefix and deletes only its own keys (never FLUSHALL). Tests that stop Redis start their
// own redis-server on a free port.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { Redis } from "ioredis";

export const TEST_REDIS_URL = process.env.KAS_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** A new connection to the test Redis; fails with instructions when Redis is not reachable. */
export async function redisConnection(url = TEST_REDIS_URL): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5000 });
  redis.on("error", () => {});
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    throw new Error(
      `Redis is not reachable at ${url} (${(err as Error).message}). Start it with: redis-server --daemonize yes (or set KAS_TEST_REDIS_URL).`,
      { cause: err },
    );
  }
  return redis;
}

/** A channel or key name no other test run uses. */
export function uniqueRedisName(prefix: string): string {
  return `${prefix}:test-${randomBytes(6).toString("hex")}`;
}

/** Deletes every key starting with `prefix` (this run's keys only). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scanBuffer(cursor, "MATCH", `${escapeGlob(prefix)}*`, "COUNT", 1000);
    cursor = String(next);
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== "0");
}

function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\]/g, "\\$&");
}

/** A redis-server of the test's own, which it may stop and start again (same port, empty). */
export interface OwnRedis {
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Starts redis-server (the Debian binary) on a free port, without persistence. */
export async function startOwnRedis(): Promise<OwnRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async () => {
    const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        output += d.toString();
        if (/Ready to accept connections/.test(output)) resolve();
      };
      proc.stdout!.on("data", onData);
      proc.stderr!.on("data", onData);
      proc.once("error", (err) => reject(new Error(`cannot run redis-server: ${err.message}`)));
      proc.once("exit", (code) => reject(new Error(`redis-server exited (${code}): ${output}`)));
    });
  };
  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGKILL");
    await exited;
  };
  await start();
  return { port, url: `redis://127.0.0.1:${port}`, start, stop };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
