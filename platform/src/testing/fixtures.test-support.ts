/**
 * Shared test fixtures (a *.test-support.ts file: no tests, not in the package).
 * Every store-backed suite runs twice: against embedded SQLite in a temp dir and against the
 * machine's PostgreSQL in a throwaway schema. A missing PostgreSQL fails the suite, on purpose.
 */
import { after, before, beforeEach, describe } from "mocha";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import knexFactory from "knex";
import { openStore, type Store } from "../store/store.js";

export const TEST_POSTGRES_URL = process.env.KAS_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const SCHEMA_PREFIX = "kasbridge_test_";

export type StoreKind = "sqlite" | "postgres";
export const STORE_KINDS: readonly StoreKind[] = ["sqlite", "postgres"];

export interface TestStore {
  store: Store;
  /** Closes the store and removes its files / schema. */
  dispose(): Promise<void>;
}

let pgChecked: Promise<void> | undefined;

/** Fails with instructions when PostgreSQL is not reachable; also drops schemas of dead test runs. */
function checkPostgres(): Promise<void> {
  return (pgChecked ??= (async () => {
    const knex = knexFactory({ client: "pg", connection: TEST_POSTGRES_URL, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 5000 });
    try {
      await knex.raw("select 1");
    } catch (err) {
      pgChecked = undefined;
      throw new Error(
        `PostgreSQL is not reachable at ${TEST_POSTGRES_URL.replace(/:[^:@/]*@/, ":***@")} (${(err as Error).message}). ` +
          "Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start " +
          "(or set KAS_TEST_POSTGRES_URL).",
        { cause: err },
      );
    }
    try {
      const { rows } = (await knex.raw("select nspname from pg_namespace where nspname like ?", [`${SCHEMA_PREFIX}%`])) as {
        rows: { nspname: string }[];
      };
      for (const { nspname } of rows) {
        const pid = Number(/^kasbridge_test_(\d+)_/.exec(nspname)?.[1]);
        if (pid && !processAlive(pid)) await knex.raw("DROP SCHEMA IF EXISTS ?? CASCADE", [nspname]);
      }
    } finally {
      await knex.destroy();
    }
  })());
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export async function openTestStore(kind: StoreKind): Promise<TestStore> {
  if (kind === "postgres") await checkPostgres(); // before mkdtemp, so a failure leaves nothing behind
  const dataDir = await mkdtemp(join(tmpdir(), "kasbridge-store-"));
  if (kind === "sqlite") {
    const store = await openStore({ dataDir });
    return {
      store,
      async dispose() {
        await store.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  }
  const schema = `${SCHEMA_PREFIX}${process.pid}_${randomBytes(4).toString("hex")}`;
  let store: Store;
  try {
    store = await openStore({ databaseUrl: TEST_POSTGRES_URL, dataDir, schema, poolMax: 4 });
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    store,
    async dispose() {
      try {
        await store.knex.raw("DROP SCHEMA IF EXISTS ?? CASCADE", [schema]);
      } finally {
        await store.close();
        await rm(dataDir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * Empties every table and restarts id sequences, so each test sees a fresh store (ids from 1)
 * without paying for a new database and migrations (~0.1 s for SQLite, ~0.5 s+ for PostgreSQL).
 */
export async function resetStore(store: Store): Promise<void> {
  const { knex } = store;
  if (store.dialect === "postgres") {
    const { rows } = (await knex.raw(
      "select tablename from pg_tables where schemaname = current_schema() and tablename not like 'kasbridge_migrations%'",
    )) as { rows: { tablename: string }[] };
    if (rows.length === 0) return;
    await knex.raw(`TRUNCATE TABLE ${rows.map(() => "??").join(", ")} RESTART IDENTITY CASCADE`, rows.map((r) => r.tablename));
    return;
  }
  const tables = (await knex("sqlite_master")
    .where({ type: "table" })
    .andWhereNot("name", "like", "sqlite_%")
    .andWhereNot("name", "like", "kasbridge_migrations%")
    .pluck("name")) as string[];
  // Foreign keys off so the order of deletes does not matter (namespaces reference themselves);
  // safe because the SQLite store has a single connection and no transaction is open.
  await knex.raw("PRAGMA foreign_keys = OFF");
  try {
    for (const table of tables) await knex(table).delete();
    await knex("sqlite_sequence").delete();
  } finally {
    await knex.raw("PRAGMA foreign_keys = ON");
  }
}

/**
 * Declares `fn`'s tests once per store kind. Each kind opens one store for the block and empties
 * it before every test, so `getStore()` always returns an empty, migrated store.
 */
export function describeEachStore(title: string, fn: (getStore: () => Store, kind: StoreKind) => void): void {
  for (const kind of STORE_KINDS) {
    describe(`${title} [${kind}]`, () => {
      const holder = useTestStore(kind);
      fn(() => holder.store, kind);
    });
  }
}

/**
 * Registers hooks in the current describe block: one store of `kind` for the block, emptied before
 * each test, disposed after the block.
 */
export function useTestStore(kind: StoreKind): { readonly store: Store } {
  let current: TestStore | undefined;
  before(async () => {
    current = await openTestStore(kind);
  });
  beforeEach(async () => {
    if (current) await resetStore(current.store);
  });
  after(async () => {
    await current?.dispose();
    current = undefined;
  });
  return {
    get store(): Store {
      if (!current) throw new Error("test store used outside its describe block");
      return current.store;
    },
  };
}
