import type { Knex } from "knex";
import type { TokenRevocation } from "@kasbridge/sdk/platform-client";
import { toDbTime } from "../store/db-util.js";
import type { ServiceContext } from "./context.js";

export interface RevocationFeedPage {
  revocations: TokenRevocation[];
  /** Pass back as `after` to get what follows. */
  cursor: number;
}

/** Listener errors are logged and never reach the revoking caller. */
export type RevocationListener = (revocation: TokenRevocation) => void;

export interface RevocationService {
  /** Calls `listener` synchronously after each revocation commits; returns an unsubscribe function. */
  subscribe(listener: RevocationListener): () => void;
  /**
   * Revocations recorded after cursor `after`, oldest first, at most `limit`. Without `after`,
   * returns no revocations and the current cursor, so a new watcher starts from "now".
   */
  feed(after: number | undefined, limit?: number): Promise<RevocationFeedPage>;
}

/**
 * Used by the services that revoke credentials (agent tokens, CI jobs, personal access tokens,
 * users): record inside the revoking transaction, publish after commit.
 */
export interface RevocationRecorder {
  record(trx: Knex.Transaction, revocations: readonly TokenRevocation[]): Promise<void>;
  publish(revocations: readonly TokenRevocation[]): void;
}

export interface RevocationServiceOptions {
  /** How long feed entries are kept. Default 24 h; a poller away longer misses older entries. */
  retentionMs?: number;
}

const FEED_MAX_LIMIT = 1000;
const PRUNE_EVERY_MS = 60 * 60 * 1000;

export function createRevocationService(
  ctx: ServiceContext,
  options: RevocationServiceOptions = {},
): RevocationService & RevocationRecorder {
  const { knex } = ctx;
  const retentionMs = options.retentionMs ?? 24 * 60 * 60 * 1000;
  const listeners = new Set<RevocationListener>();
  let lastPruneMs = 0;

  return {
    subscribe(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },

    async record(trx, revocations) {
      if (revocations.length === 0) return;
      if (ctx.store.dialect === "postgres") {
        // Serialises revoking transactions so ids become visible in id order: otherwise a feed
        // reader could see id 6 commit before id 5, advance its cursor past 5 and never see it.
        // EXCLUSIVE mode still lets readers of the feed through.
        await trx.raw("LOCK TABLE token_revocations IN EXCLUSIVE MODE");
      }
      const now = ctx.now();
      await trx("token_revocations").insert(revocations.map((r) => ({ ...revocationRow(r), revoked_at: toDbTime(now) })));
      if (now.getTime() - lastPruneMs >= PRUNE_EVERY_MS) {
        lastPruneMs = now.getTime();
        await trx("token_revocations").where("revoked_at", "<", toDbTime(new Date(now.getTime() - retentionMs))).delete();
      }
    },

    publish(revocations) {
      for (const revocation of revocations) {
        for (const listener of [...listeners]) {
          try {
            listener({ ...revocation });
          } catch (err) {
            ctx.logger.error({ err, revocation }, "token revocation listener failed");
          }
        }
      }
    },

    async feed(after, limit = FEED_MAX_LIMIT) {
      const max = (await knex("token_revocations").max({ id: "id" }).first()) as { id: unknown } | undefined;
      const maxId = max?.id == null ? 0 : Number(max.id);
      // A cursor beyond the newest entry means the database was replaced: restart from now.
      if (after === undefined || after > maxId) return { revocations: [], cursor: maxId };
      const rows = (await knex("token_revocations")
        .where("id", ">", after)
        .orderBy("id")
        .limit(Math.max(1, Math.min(limit, FEED_MAX_LIMIT)))
        .select("id", "kind", "agent_id", "token_id", "user_id", "job_id")) as RevocationRow[];
      return {
        revocations: rows.map(revocationFromRow).filter((r): r is TokenRevocation => r !== undefined),
        cursor: rows.length > 0 ? Number(rows[rows.length - 1]!.id) : after,
      };
    },
  };
}

interface RevocationRow {
  id: number;
  kind: string;
  agent_id: number | null;
  token_id: number | null;
  user_id: number | null;
  job_id: number | null;
}

function revocationRow(r: TokenRevocation): Omit<RevocationRow, "id"> {
  const none = { agent_id: null, token_id: null, user_id: null, job_id: null };
  switch (r.kind) {
    case "agent_token":
      return { ...none, kind: r.kind, agent_id: r.agentId, token_id: r.tokenId };
    case "ci_job":
      return { ...none, kind: r.kind, job_id: r.jobId };
    case "personal_access_token":
      return { ...none, kind: r.kind, user_id: r.userId, token_id: r.tokenId };
    case "user":
      return { ...none, kind: r.kind, user_id: r.userId };
  }
}

/** The row as a revocation; undefined for a kind this version does not know (written by a newer one). */
function revocationFromRow(row: RevocationRow): TokenRevocation | undefined {
  const n = (v: number | null) => Number(v);
  switch (row.kind) {
    case "agent_token":
      return { kind: "agent_token", agentId: n(row.agent_id), tokenId: n(row.token_id) };
    case "ci_job":
      return { kind: "ci_job", jobId: n(row.job_id) };
    case "personal_access_token":
      return { kind: "personal_access_token", userId: n(row.user_id), tokenId: n(row.token_id) };
    case "user":
      return { kind: "user", userId: n(row.user_id) };
    default:
      return undefined;
  }
}
