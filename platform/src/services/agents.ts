import { fromDbTime, isUniqueViolation, toDbTime } from "../store/db-util.js";
import type { ServiceContext } from "./context.js";
import { invalid } from "./errors.js";
import type { RevocationRecorder } from "./revocations.js";
import { agentNameErrors } from "./validation.js";
import type { TokenRevocation } from "@kasbridge/sdk/platform-client";

export interface Agent {
  id: number;
  name: string;
  projectId: number;
  createdByUserId: number | null;
  createdAt: Date;
}

export interface AgentService {
  /** Registers an agent; the name must be unique in the project and a valid DNS label. */
  create(projectId: number, name: string, createdByUserId: number | null): Promise<Agent>;
  /** The agent, when it belongs to `projectId`. */
  get(projectId: number, agentId: number): Promise<Agent | undefined>;
  getById(agentId: number): Promise<Agent | undefined>;
  list(projectId: number): Promise<Agent[]>;
  /**
   * Deletes the agent and its tokens. Its active tokens are revoked first (and announced to
   * revocation subscribers), so KAS closes the agent's tunnels. Returns false when not found.
   */
  delete(projectId: number, agentId: number): Promise<boolean>;
}

export interface AgentRow {
  id: number;
  name: string;
  project_id: number;
  created_by_user_id: number | null;
  created_at: unknown;
}

export function agentFromRow(row: AgentRow): Agent {
  return {
    id: row.id,
    name: row.name,
    projectId: row.project_id,
    createdByUserId: row.created_by_user_id,
    createdAt: fromDbTime(row.created_at),
  };
}

export function createAgentService(ctx: ServiceContext, revocations: RevocationRecorder): AgentService {
  const { knex } = ctx;

  return {
    async create(projectId, name, createdByUserId) {
      if (typeof name !== "string") throw invalid("name is missing");
      const problems = agentNameErrors(name);
      if (problems.length > 0) throw invalid(JSON.stringify(problems), { name: problems });
      if (await knex("cluster_agents").where({ project_id: projectId, name }).first("id")) {
        throw invalid(JSON.stringify(["Name has already been taken"]), { name: ["has already been taken"] });
      }
      try {
        const [{ id }] = (await knex("cluster_agents")
          .insert({ project_id: projectId, name, created_by_user_id: createdByUserId, created_at: toDbTime(ctx.now()) })
          .returning("id")) as { id: number }[];
        return agentFromRow((await knex("cluster_agents").where({ id }).first()) as AgentRow);
      } catch (err) {
        if (isUniqueViolation(err)) {
          throw invalid(JSON.stringify(["Name has already been taken"]), { name: ["has already been taken"] });
        }
        throw err;
      }
    },
    async get(projectId, agentId) {
      const row = (await knex("cluster_agents").where({ id: agentId, project_id: projectId }).first()) as AgentRow | undefined;
      return row && agentFromRow(row);
    },
    async getById(agentId) {
      const row = (await knex("cluster_agents").where({ id: agentId }).first()) as AgentRow | undefined;
      return row && agentFromRow(row);
    },
    async list(projectId) {
      const rows = (await knex("cluster_agents").where({ project_id: projectId }).orderBy("id")) as AgentRow[];
      return rows.map(agentFromRow);
    },
    async delete(projectId, agentId) {
      let revoked: TokenRevocation[] = [];
      const deleted = await knex.transaction(async (trx) => {
        const q = trx("cluster_agents").where({ id: agentId, project_id: projectId });
        // Locks the agent against a concurrent token creation (PostgreSQL; SQLite has one writer).
        const agent = ctx.store.dialect === "postgres" ? await q.clone().forUpdate().first("id") : await q.clone().first("id");
        if (!agent) return false;
        const active = (await trx("cluster_agent_tokens").where({ agent_id: agentId, status: "active" }).select("id")) as {
          id: number;
        }[];
        revoked = active.map((t) => ({ kind: "agent_token", agentId, tokenId: t.id }));
        await trx("cluster_agent_tokens")
          .where({ agent_id: agentId, status: "active" })
          .update({ status: "revoked", revoked_at: toDbTime(ctx.now()) });
        await revocations.record(trx, revoked);
        await trx("cluster_agents").where({ id: agentId }).delete();
        return true;
      });
      revocations.publish(revoked);
      return deleted;
    },
  };
}
