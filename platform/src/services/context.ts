import type { Knex } from "knex";
import type { Logger } from "pino";
import type { Store } from "../store/store.js";

/** What every service needs: the database, a clock (injectable for tests) and a logger. */
export interface ServiceContext {
  readonly store: Store;
  readonly knex: Knex;
  readonly now: () => Date;
  readonly logger: Logger;
}

/** Runs `fn` in a transaction; nested calls reuse the outer one. */
export function inTransaction<T>(db: Knex | Knex.Transaction, fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return db.isTransaction ? fn(db as Knex.Transaction) : db.transaction(fn);
}
