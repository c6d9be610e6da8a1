import type { Knex } from "knex";
import type { TokenRevocation } from "../platform-client.js";
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

/** Used by the agent and token services: record inside the revoking transaction, publish after commit. */
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
        await trx.raw("LOCK TABLE agent_token_revocations IN EXCLUSIVE MODE");
      }
      const now = ctx.now();
      await trx("agent_token_revocations").insert(
        revocations.map((r) => ({ agent_id: r.agentId, token_id: r.tokenId, revoked_at: toDbTime(now) })),
      );
      if (now.getTime() - lastPruneMs >= PRUNE_EVERY_MS) {
        lastPruneMs = now.getTime();
        await trx("agent_token_revocations").where("revoked_at", "<", toDbTime(new Date(now.getTime() - retentionMs))).delete();
      }
    },

    publish(revocations) {
      for (const revocation of revocations) {
        for (const listener of [...listeners]) {
          try {
            listener({ ...revocation });
          } catch (err) {
            ctx.logger.error({ err, agentId: revocation.agentId, tokenId: revocation.tokenId }, "token revocation listener failed");
          }
        }
      }
    },

    async feed(after, limit = FEED_MAX_LIMIT) {
      const max = (await knex("agent_token_revocations").max({ id: "id" }).first()) as { id: unknown } | undefined;
      const maxId = max?.id == null ? 0 : Number(max.id);
      // A cursor beyond the newest entry means the database was replaced: restart from now.
      if (after === undefined || after > maxId) return { revocations: [], cursor: maxId };
      const rows = (await knex("agent_token_revocations")
        .where("id", ">", after)
        .orderBy("id")
        .limit(Math.max(1, Math.min(limit, FEED_MAX_LIMIT)))
        .select("id", "agent_id", "token_id")) as { id: number; agent_id: number; token_id: number }[];
      return {
        revocations: rows.map((r) => ({ agentId: r.agent_id, tokenId: r.token_id })),
        cursor: rows.length > 0 ? rows[rows.length - 1]!.id : after,
      };
    },
  };
}
