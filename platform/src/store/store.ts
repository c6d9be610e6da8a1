import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import knexFactory from "knex";
import pg from "pg";
import type { Knex } from "knex";
import type { Logger } from "pino";
import { migrationSource } from "./migrations.js";

export interface OpenStoreOptions {
  /**
   * `postgres://` (or `postgresql://`) URL for PostgreSQL. When absent, an embedded SQLite database
   * at `<dataDir>/kas.sqlite3` is used.
   */
  databaseUrl?: string;
  /** Directory for the SQLite file (created if missing). Required so defaults work with nothing set. */
  dataDir: string;
  /** PostgreSQL schema to hold the tables, created if missing. Default: the server's search_path. */
  schema?: string;
  /** Maximum PostgreSQL connections in the pool. Default 10. SQLite always uses one connection. */
  poolMax?: number;
  /** Receives knex's own warnings (e.g. connection failures). Default: they are dropped. */
  logger?: Logger;
}

export type StoreDialect = "sqlite" | "postgres";

/** An open, migrated database. */
export interface Store {
  readonly knex: Knex;
  readonly dialect: StoreDialect;
  /**
   * Runs `work` while holding the database's startup lock (PostgreSQL: an advisory lock on a
   * connection of its own, per schema), so that replicas starting at once migrate and bootstrap
   * one after the other. SQLite: runs `work` (one file, one writer).
   */
  withStartupLock<T>(work: () => Promise<T>): Promise<T>;
  /** Closes every connection; the store is unusable afterwards. Idempotent. */
  close(): Promise<void>;
}

/** File name of the embedded SQLite database inside the data directory. */
export const SQLITE_FILE_NAME = "kas.sqlite3";

const SCHEMA_NAME_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** Opens the database and brings its schema up to date. */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const { databaseUrl } = options;
  // knex prints to the console unless given a logger; route its messages to ours (or nowhere).
  const log: Knex.Logger = {
    warn: (message: unknown) => options.logger?.warn({ source: "knex" }, String(message)),
    error: (message: unknown) => options.logger?.error({ source: "knex" }, String(message)),
    deprecate: (method: string, alternative: string) =>
      options.logger?.warn({ source: "knex" }, `${method} is deprecated, use ${alternative}`),
    debug: () => {},
  };
  let knex: Knex;
  let dialect: StoreDialect;
  if (databaseUrl !== undefined && databaseUrl !== "") {
    if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
      // Never echo the URL: it may carry a password.
      throw new Error("databaseUrl must start with postgres:// or postgresql:// (omit it for embedded SQLite)");
    }
    if (options.schema !== undefined && !SCHEMA_NAME_RE.test(options.schema)) {
      throw new Error(`schema ${JSON.stringify(options.schema)} must match ${SCHEMA_NAME_RE}`);
    }
    dialect = "postgres";
    knex = knexFactory({
      client: "pg",
      log,
      connection: databaseUrl,
      searchPath: options.schema ? [options.schema] : undefined,
      pool: { min: 0, max: options.poolMax ?? 10 },
      migrations: { tableName: "kasbridge_migrations", schemaName: options.schema },
    });
  } else {
    dialect = "sqlite";
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    knex = knexFactory({
      client: "sqlite3",
      log,
      connection: { filename: join(options.dataDir, SQLITE_FILE_NAME) },
      useNullAsDefault: true,
      // One connection: SQLite has a single writer anyway, and it keeps transactions from
      // failing with SQLITE_BUSY against our own other connections.
      pool: {
        min: 1,
        max: 1,
        afterCreate(conn: SqliteConnection, done: (err: Error | null, conn: unknown) => void) {
          conn.configure("busyTimeout", 5000); // other processes sharing the file
          conn.exec("PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", (err) =>
            done(err, conn),
          );
        },
      },
      migrations: { tableName: "kasbridge_migrations" },
    });
  }

  const withStartupLock = <T>(work: () => Promise<T>): Promise<T> =>
    dialect === "postgres" ? withAdvisoryLock(databaseUrl!, `kasbridge-startup:${options.schema ?? ""}`, work) : work();
  try {
    await withStartupLock(async () => {
      if (dialect === "postgres" && options.schema) {
        await knex.raw("CREATE SCHEMA IF NOT EXISTS ??", [options.schema]);
      }
      await knex.migrate.latest({ migrationSource });
    });
  } catch (err) {
    await knex.destroy();
    throw new Error(`cannot open ${dialect} store: ${(err as Error).message}`, { cause: err });
  }

  let closed: Promise<void> | undefined;
  return {
    knex,
    dialect,
    withStartupLock,
    close: () => (closed ??= knex.destroy()),
  };
}

/**
 * Runs `work` while this process holds PostgreSQL's advisory lock named `name`: on a connection
 * outside the pool (so a pool of one connection cannot deadlock), released when `work` ends or
 * that connection drops. Another process asking for it waits.
 */
async function withAdvisoryLock<T>(databaseUrl: string, name: string, work: () => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrl });
  // A connection that drops releases the lock; the error reaches `work`'s own queries.
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext($1))", [name]);
    return await work();
  } finally {
    await client.end().catch(() => {});
  }
}

interface SqliteConnection {
  configure(option: "busyTimeout", value: number): void;
  exec(sql: string, callback: (err: Error | null) => void): void;
}
