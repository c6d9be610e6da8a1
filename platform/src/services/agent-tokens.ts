import { digestToken, digestsEqual, generateAgentToken } from "@kasbridge/sdk/auth";
import { fromDbTime, fromDbTimeOrNull, toDbTime } from "../store/db-util.js";
import { agentFromRow, type Agent, type AgentRow } from "./agents.js";
import type { ServiceContext } from "./context.js";
import { invalid, notFound } from "./errors.js";
import type { Project, ProjectService } from "./projects.js";
import type { RevocationRecorder } from "./revocations.js";
import type { UsageThrottle } from "./usage-throttle.js";
import { optionalString, requireString } from "./validation.js";

/** GitLab allows two active tokens per agent, so a token can be rotated without downtime. */
export const MAX_ACTIVE_AGENT_TOKENS = 2;
export const TOO_MANY_AGENT_TOKENS_MESSAGE = "An agent can have only two active tokens at a time";

export interface AgentToken {
  id: number;
  agentId: number;
  name: string;
  description: string | null;
  status: "active" | "revoked";
  createdByUserId: number | null;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

/** What an agent token resolves to. */
export interface AuthenticatedAgent {
  token: AgentToken;
  agent: Agent;
  project: Project;
}

export interface CreateAgentTokenInput {
  name: string;
  description?: string | null;
}

export interface AgentTokenService {
  /**
   * Issues a token. `secret` is the plaintext, returned only here; the store keeps its digest.
   * Refused (invalid) when the agent already has two active tokens.
   */
  create(agentId: number, input: CreateAgentTokenInput, createdByUserId: number | null): Promise<{ token: AgentToken; secret: string }>;
  /** Tokens of the agent, oldest first; only active ones unless `includeRevoked`. */
  list(agentId: number, options?: { includeRevoked?: boolean }): Promise<AgentToken[]>;
  get(agentId: number, tokenId: number): Promise<AgentToken | undefined>;
  /**
   * Revokes the token and announces {agentId, tokenId} to revocation subscribers once committed.
   * Revoking a revoked token is a no-op (`revokedNow` false). Throws not_found when the token is not the agent's.
   */
  revoke(agentId: number, tokenId: number): Promise<{ token: AgentToken; revokedNow: boolean }>;
  /**
   * Resolves a plaintext token to its agent and project; undefined when unknown or revoked.
   * Records the use in `last_used_at`, at most once per throttle interval.
   */
  authenticate(secret: string): Promise<AuthenticatedAgent | undefined>;
}

interface AgentTokenRow {
  id: number;
  agent_id: number;
  name: string;
  description: string | null;
  token_digest: string;
  status: string;
  created_by_user_id: number | null;
  created_at: unknown;
  last_used_at: unknown;
  revoked_at: unknown;
}

function tokenFromRow(row: AgentTokenRow): AgentToken {
  return {
    id: row.id,
    agentId: row.agent_id,
    name: row.name,
    description: row.description,
    status: row.status === "active" ? "active" : "revoked",
    createdByUserId: row.created_by_user_id,
    createdAt: fromDbTime(row.created_at),
    lastUsedAt: fromDbTimeOrNull(row.last_used_at),
    revokedAt: fromDbTimeOrNull(row.revoked_at),
  };
}

/** Longest token string we hash; anything longer is not ours and not worth a query. */
const MAX_TOKEN_LENGTH = 1024;

export function createAgentTokenService(
  ctx: ServiceContext,
  deps: { projects: ProjectService; revocations: RevocationRecorder; throttle: UsageThrottle },
): AgentTokenService {
  const { knex } = ctx;

  async function touch(token: AgentToken): Promise<void> {
    const now = ctx.now();
    if (!deps.throttle.shouldWrite(token.id, now.getTime())) return;
    const threshold = toDbTime(new Date(now.getTime() - deps.throttle.intervalMs));
    try {
      // The condition keeps the interval across processes sharing the database.
      await knex("cluster_agent_tokens")
        .where({ id: token.id })
        .andWhere((q) => q.whereNull("last_used_at").orWhere("last_used_at", "<", threshold))
        .update({ last_used_at: toDbTime(now) });
    } catch (err) {
      // Losing a usage timestamp must not fail authentication.
      ctx.logger.warn({ err, tokenId: token.id }, "cannot record agent token use");
    }
  }

  return {
    async create(agentId, input, createdByUserId) {
      const name = requireString(input.name, "name", 255);
      const description = optionalString(input.description, "description", 1024) ?? null;
      const secret = generateAgentToken();
      const token = await knex.transaction(async (trx) => {
        const q = trx("cluster_agents").where({ id: agentId });
        // Row lock serialises concurrent creations for one agent, so the limit holds (PostgreSQL;
        // SQLite serialises writers by itself).
        const agent = ctx.store.dialect === "postgres" ? await q.forUpdate().first("id") : await q.first("id");
        if (!agent) throw notFound("Agent");
        const active = (await trx("cluster_agent_tokens").where({ agent_id: agentId, status: "active" }).count({ n: "*" }).first()) as
          | { n: unknown }
          | undefined;
        if (Number(active?.n ?? 0) >= MAX_ACTIVE_AGENT_TOKENS) throw invalid(TOO_MANY_AGENT_TOKENS_MESSAGE);
        const [{ id }] = (await trx("cluster_agent_tokens")
          .insert({
            agent_id: agentId,
            name,
            description,
            token_digest: digestToken(secret),
            status: "active",
            created_by_user_id: createdByUserId,
            created_at: toDbTime(ctx.now()),
          })
          .returning("id")) as { id: number }[];
        return tokenFromRow((await trx("cluster_agent_tokens").where({ id }).first()) as AgentTokenRow);
      });
      return { token, secret };
    },

    async list(agentId, options = {}) {
      const q = knex("cluster_agent_tokens").where({ agent_id: agentId }).orderBy("id");
      if (!options.includeRevoked) q.andWhere({ status: "active" });
      return ((await q) as AgentTokenRow[]).map(tokenFromRow);
    },

    async get(agentId, tokenId) {
      const row = (await knex("cluster_agent_tokens").where({ id: tokenId, agent_id: agentId }).first()) as AgentTokenRow | undefined;
      return row && tokenFromRow(row);
    },

    async revoke(agentId, tokenId) {
      let newlyRevoked = false;
      const token = await knex.transaction(async (trx) => {
        const changed = await trx("cluster_agent_tokens")
          .where({ id: tokenId, agent_id: agentId, status: "active" })
          .update({ status: "revoked", revoked_at: toDbTime(ctx.now()) });
        const row = (await trx("cluster_agent_tokens").where({ id: tokenId, agent_id: agentId }).first()) as
          | AgentTokenRow
          | undefined;
        if (!row) throw notFound("Agent token");
        if (changed > 0) {
          newlyRevoked = true;
          await deps.revocations.record(trx, [{ kind: "agent_token", agentId, tokenId }]);
        }
        return tokenFromRow(row);
      });
      if (newlyRevoked) deps.revocations.publish([{ kind: "agent_token", agentId, tokenId }]);
      return { token, revokedNow: newlyRevoked };
    },

    async authenticate(secret) {
      if (typeof secret !== "string" || secret.length === 0 || secret.length > MAX_TOKEN_LENGTH) return undefined;
      const digest = digestToken(secret);
      const row = (await knex("cluster_agent_tokens as t")
        .join("cluster_agents as a", "a.id", "t.agent_id")
        .where("t.token_digest", digest)
        .first(
          "t.*",
          "a.name as agent_name",
          "a.project_id as agent_project_id",
          "a.created_by_user_id as agent_created_by_user_id",
          "a.created_at as agent_created_at",
        )) as
        | (AgentTokenRow & { agent_name: string; agent_project_id: number; agent_created_by_user_id: number | null; agent_created_at: unknown })
        | undefined;
      // The index found the row by digest; the constant-time compare is defence in depth against
      // any lookup that is not an exact byte comparison (collations, future caching).
      if (!row || !digestsEqual(row.token_digest, digest) || row.status !== "active") return undefined;
      const token = tokenFromRow(row);
      const agentRow: AgentRow = {
        id: row.agent_id,
        name: row.agent_name,
        project_id: row.agent_project_id,
        created_by_user_id: row.agent_created_by_user_id,
        created_at: row.agent_created_at,
      };
      const project = await deps.projects.get(row.agent_project_id);
      if (!project) return undefined;
      await touch(token);
      return { token, agent: agentFromRow(agentRow), project };
    },
  };
}
