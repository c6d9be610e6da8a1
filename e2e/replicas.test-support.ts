// Several `kas` replicas on one Redis and one PostgreSQL database, sharing a data directory (a
// *.test-support.ts file: no tests).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { deleteKeys, redisConnection, TEST_REDIS_URL, uniqueRedisName } from "@kasbridge/testing/redis";
import { startKas, type KasProcess } from "./harness.test-support.js";

export const TEST_POSTGRES_URL = process.env.KAS_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** A database of this test run on the machine's PostgreSQL; `drop` removes it (and its connections). */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `kasbridge_e2e_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: TEST_POSTGRES_URL });
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(
      `PostgreSQL is not reachable at ${TEST_POSTGRES_URL.replace(/:[^:@/]*@/, ":***@")} (${(err as Error).message}). ` +
        "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start (or set KAS_TEST_POSTGRES_URL).",
      { cause: err },
    );
  }
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  return {
    url: url.href,
    async drop() {
      const c = new pg.Client({ connectionString: TEST_POSTGRES_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export type Replica = KasProcess & { cleanup(): Promise<void>; name: string };

/**
 * What the replicas of one test share: the database, the Redis key prefix, the data directory (git
 * repositories, the secrets) and any extra environment (TLS files). `start` adds a replica.
 */
export class ReplicaSet {
  readonly dataDir = mkdtempSync(join(tmpdir(), "kas-replicas-"));
  readonly keyPrefix = uniqueRedisName("kasbridge-e2e");
  readonly replicas: Replica[] = [];
  private database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  private count = 0;

  constructor(private readonly env: Record<string, string> = {}) {}

  get databaseUrl(): string {
    if (!this.database) throw new Error("ReplicaSet.open() first");
    return this.database.url;
  }

  async open(): Promise<void> {
    this.database = await createTestDatabase();
  }

  /** The environment of every replica. */
  replicaEnv(): Record<string, string> {
    return {
      KAS_DATABASE_URL: this.databaseUrl,
      KAS_REDIS_URL: TEST_REDIS_URL,
      KAS_REDIS_KEY_PREFIX: this.keyPrefix,
      ...this.env,
    };
  }

  /** Starts one more replica ("kas-1", "kas-2", ...) and waits until it listens. */
  async start(env: Record<string, string> = {}): Promise<Replica> {
    const name = `kas-${++this.count}`;
    const kas = (await startKas({ ...this.replicaEnv(), ...env }, this.dataDir, { removeDataDir: false })) as Replica;
    kas.name = name;
    this.replicas.push(kas);
    return kas;
  }

  /** Stops every replica, then drops the database, this run's Redis keys and the data directory. */
  async close(): Promise<void> {
    try {
      await Promise.all(this.replicas.map((r) => r.cleanup()));
    } finally {
      try {
        await this.database?.drop();
        const redis = await redisConnection();
        try {
          await deleteKeys(redis, this.keyPrefix);
        } finally {
          redis.disconnect();
        }
      } finally {
        rmSync(this.dataDir, { recursive: true, force: true });
      }
    }
  }
}
