/**
 * Shared test fixtures (named *.test.ts so the build leaves it out of dist; it defines no tests).
 * Every store-backed suite runs twice: against embedded SQLite in a temp dir and against the
 * machine's PostgreSQL in a throwaway schema. A missing PostgreSQL fails the suite, on purpose.
 */
import { afterEach, beforeEach, describe } from "mocha";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import knexFactory from "knex";
import { openStore, type Store } from "../store/store.js";

export const TEST_POSTGRES_URL = process.env.KASBRIDGE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
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
          "(or set KASBRIDGE_TEST_POSTGRES_URL).",
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
  await checkPostgres();
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
 * Declares `fn`'s tests once per store kind. `getStore()` returns a fresh, empty store for each
 * test (a migrated SQLite file costs ~10 ms, a PostgreSQL schema ~60 ms).
 */
export function describeEachStore(title: string, fn: (getStore: () => Store, kind: StoreKind) => void): void {
  for (const kind of STORE_KINDS) {
    describe(`${title} [${kind}]`, () => {
      let current: TestStore | undefined;
      beforeEach(async () => {
        current = await openTestStore(kind);
      });
      afterEach(async () => {
        await current?.dispose();
        current = undefined;
      });
      fn(() => {
        if (!current) throw new Error("store used outside a test");
        return current.store;
      }, kind);
    });
  }
}
