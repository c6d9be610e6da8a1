/** Helpers that paper over differences between the SQLite and PostgreSQL drivers. */

/** True for a unique-constraint violation from either driver. */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  if (!e) return false;
  if (e.code === "23505") return true; // PostgreSQL unique_violation
  return e.code === "SQLITE_CONSTRAINT" && /UNIQUE constraint failed/.test(e.message ?? "");
}

/** Connection-level failures: the database is down, restarting or unreachable (not a bad query). */
const unavailableCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENOTFOUND",
  // PostgreSQL class 08 (connection exception) and 57P0x (shutting down, cannot connect now).
  "08000",
  "08001",
  "08003",
  "08004",
  "08006",
  "57P01",
  "57P02",
  "57P03",
]);

/**
 * True when `err` (or what caused it) means the database cannot be reached right now: refused or
 * lost connections, a server shutting down, no pool connection within knex's acquire timeout.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown } | null; e && !seen.has(e); e = e.cause as typeof e) {
    seen.add(e);
    if (typeof e.code === "string" && unavailableCodes.has(e.code)) return true;
    if (e.name === "KnexTimeoutError") return true;
    if (typeof e.message === "string" && /Connection terminated|connection error|terminating connection/i.test(e.message)) return true;
  }
  return false;
}

/**
 * Timestamps are written as ISO-8601 UTC strings (sortable as text in SQLite, parsed by
 * PostgreSQL into timestamptz) and read back as Date from either driver.
 */
export function toDbTime(date: Date): string {
  return date.toISOString();
}

export function fromDbTime(value: unknown): Date {
  if (value instanceof Date) return value;
  if (typeof value === "string" || typeof value === "number") return new Date(value);
  throw new TypeError(`not a timestamp: ${String(value)}`);
}

export function fromDbTimeOrNull(value: unknown): Date | null {
  return value === null || value === undefined ? null : fromDbTime(value);
}

/** SQLite returns booleans as 0/1. */
export function fromDbBool(value: unknown): boolean {
  return value === true || value === 1 || value === "1" || value === "t";
}

/** PostgreSQL returns COUNT(*) and bigint as strings. */
export function fromDbInt(value: unknown): number {
  return typeof value === "number" ? value : Number(value);
}

/** Ids are 32-bit serials in both databases; a larger number can never name a row. */
export const MAX_DB_ID = 2_147_483_647;
