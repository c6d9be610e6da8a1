/**
 * CI and user access authorizations derived from agent configs, as GitLab's
 * `Clusters::Agents::Authorizations::{CiAccess,UserAccess}::RefreshService` writes them and its
 * finders read them.
 *
 * Writing (when a config is accepted): the first 500 `projects[]` / `groups[]` entries are
 * resolved by full path (case-insensitive; a later duplicate wins) to ids, keeping only projects
 * and groups under the config project's top-level namespace (groups only when that is a group,
 * not a user's namespace). Entries naming nothing are dropped silently, as in GitLab; a project
 * created later is authorized by the next config change (or through an authorized group).
 *
 * Reading: `allowedAgentsForProject` is one SQL statement: the project's own authorizations, the
 * implicit one of agents whose config project it is, and the authorizations of its group and every
 * ancestor group (recursive CTE over namespaces.parent_id); the closest wins per agent.
 */
import type { Knex } from "knex";
import { toJson, type JsonObject } from "@bufbuild/protobuf";
import {
  CiAccessGroupCFSchema,
  CiAccessProjectCFSchema,
  UserAccessAsCFSchema,
  type ConfigurationFile,
} from "@kasbridge/sdk/gen/gitlab/agent/agentcfg/agentcfg_pb";
import { AccessLevel } from "../services/access-levels.js";
import { agentFromRow, type Agent } from "../services/agents.js";
import { namespaceFromRow } from "../services/namespaces.js";
import { projectFromRow, type Project } from "../services/projects.js";

/** GitLab's AUTHORIZED_ENTITY_LIMIT: entries of `projects` and of `groups` beyond it are ignored. */
export const AUTHORIZED_ENTITY_LIMIT = 500;

/**
 * A ci_access entry without its `id`, as proto JSON (GitLab stores the YAML entry minus `id`):
 * `{ default_namespace?, access_as?, environments? }`. Empty for the implicit authorization.
 */
export type CiAccessAuthorizationConfig = JsonObject & {
  default_namespace?: string;
  access_as?: JsonObject;
  environments?: string[];
};

/** `{ access_as? }` of the agent's user_access section. */
export type UserAccessAuthorizationConfig = JsonObject & { access_as?: JsonObject };

/** An agent a project's CI jobs may use, with how (GitLab's `allowed_agents` entries). */
export interface AllowedAgent {
  agent: Agent;
  /** The agent's config project. */
  configProject: Project;
  configuration: CiAccessAuthorizationConfig;
  /**
   * Which authorization won: the project's own entry, the implicit one (the project is the
   * agent's config project), or a group entry on the project's group or an ancestor.
   */
  via: "project" | "implicit" | "group";
  /** For `via: "group"`: the authorized group. */
  groupId?: number;
}

/** A user_access authorization the user may use (Developer or more on its project or group). */
export interface UserAccessAuthorization {
  agent: Agent;
  configProject: Project;
  configuration: UserAccessAuthorizationConfig;
  via: "project" | "group";
  /** The authorized project (via "project") or group (via "group"). */
  targetId: number;
  /** The user's access level there (OWNER for admins). */
  accessLevel: number;
}

interface ResolvedAuthorizations {
  ciProjects: { id: number; config: JsonObject }[];
  ciGroups: { id: number; config: JsonObject }[];
  userProjects: { id: number; config: JsonObject }[];
  userGroups: { id: number; config: JsonObject }[];
}

const TABLES = {
  ciProjects: ["agent_ci_access_project_authorizations", "project_id"],
  ciGroups: ["agent_ci_access_group_authorizations", "group_id"],
  userProjects: ["agent_user_access_project_authorizations", "project_id"],
  userGroups: ["agent_user_access_group_authorizations", "group_id"],
} as const;

/** Rows per INSERT, well under SQLite's bound-parameter limit. */
const INSERT_CHUNK = 200;

/** Knex raw results: an array from SQLite, `{ rows }` from PostgreSQL. */
export function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}

const placeholders = (values: readonly unknown[]) => values.map(() => "?").join(", ");

/** Resolves the config's ci_access and user_access entries to project and group ids. */
export async function resolveAuthorizations(
  db: Knex | Knex.Transaction,
  configProjectId: number,
  config: ConfigurationFile,
): Promise<ResolvedAuthorizations> {
  const own = (await db("projects as p")
    .join("namespaces as n", "n.id", "p.namespace_id")
    .where("p.id", configProjectId)
    .first("n.full_path")) as { full_path: string } | undefined;
  const empty: ResolvedAuthorizations = { ciProjects: [], ciGroups: [], userProjects: [], userGroups: [] };
  if (!own) return empty;
  const root = own.full_path.split("/")[0]!;
  const rootNs = (await db("namespaces").where({ full_path: root }).first("kind")) as { kind: string } | undefined;
  const groupsAllowed = rootNs?.kind === "group";
  const underRoot = (path: string) => path === root || path.startsWith(`${root}/`);

  async function projectIds(paths: string[]): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    if (paths.length === 0) return found;
    const rows = (await db("projects as p")
      .join("namespaces as n", "n.id", "p.namespace_id")
      .whereRaw(`lower(n.full_path || '/' || p.path) IN (${placeholders(paths)})`, paths)
      .select("p.id", "p.path", "n.full_path")) as { id: number; path: string; full_path: string }[];
    for (const r of rows) if (underRoot(r.full_path)) found.set(`${r.full_path}/${r.path}`.toLowerCase(), r.id);
    return found;
  }
  async function groupIds(paths: string[]): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    if (paths.length === 0 || !groupsAllowed) return found;
    const rows = (await db("namespaces")
      .where({ kind: "group" })
      .whereRaw(`lower(full_path) IN (${placeholders(paths)})`, paths)
      .select("id", "full_path")) as { id: number; full_path: string }[];
    for (const r of rows) if (underRoot(r.full_path)) found.set(r.full_path.toLowerCase(), r.id);
    return found;
  }
  /** GitLab's `first(500).index_by { id.downcase }`: later duplicates win. */
  function byPath<T extends { id: string }>(entries: readonly T[]): Map<string, T> {
    const m = new Map<string, T>();
    for (const e of entries.slice(0, AUTHORIZED_ENTITY_LIMIT)) m.set(e.id.toLowerCase(), e);
    return m;
  }
  async function resolve<T extends { id: string }>(
    entries: readonly T[],
    lookup: (paths: string[]) => Promise<Map<string, number>>,
    configOf: (entry: T) => JsonObject,
  ): Promise<{ id: number; config: JsonObject }[]> {
    const wanted = byPath(entries);
    const ids = await lookup([...wanted.keys()]);
    const out: { id: number; config: JsonObject }[] = [];
    for (const [path, entry] of wanted) {
      const id = ids.get(path);
      if (id !== undefined) out.push({ id, config: configOf(entry) });
    }
    return out;
  }
  const withoutId = (json: JsonObject): JsonObject => {
    const { id: _id, ...rest } = json;
    return rest;
  };

  const ci = config.ciAccess;
  const ua = config.userAccess;
  const userConfig: JsonObject = ua?.accessAs ? { access_as: toJson(UserAccessAsCFSchema, ua.accessAs) } : {};
  return {
    ciProjects: await resolve(ci?.projects ?? [], projectIds, (e) => withoutId(toJson(CiAccessProjectCFSchema, e) as JsonObject)),
    ciGroups: await resolve(ci?.groups ?? [], groupIds, (e) => withoutId(toJson(CiAccessGroupCFSchema, e) as JsonObject)),
    userProjects: await resolve(ua?.projects ?? [], projectIds, () => userConfig),
    userGroups: await resolve(ua?.groups ?? [], groupIds, () => userConfig),
  };
}

/** Replaces every authorization of the agent (call inside the accepting transaction). */
export async function replaceAuthorizations(trx: Knex.Transaction, agentId: number, resolved: ResolvedAuthorizations): Promise<void> {
  for (const key of Object.keys(TABLES) as (keyof typeof TABLES)[]) {
    const [table, column] = TABLES[key];
    await trx(table).where({ agent_id: agentId }).delete();
    const rows = resolved[key].map((r) => ({ agent_id: agentId, [column]: r.id, config: JSON.stringify(r.config) }));
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) await trx(table).insert(rows.slice(i, i + INSERT_CHUNK));
  }
}

// ---- reading ----

/** Columns of an agent, its config project and that project's namespace, prefixed a_, p_, n_. */
const AGENT_PROJECT_COLUMNS = `
  a.id AS a_id, a.name AS a_name, a.project_id AS a_project_id, a.created_by_user_id AS a_created_by_user_id,
  a.created_at AS a_created_at,
  cp.id AS p_id, cp.name AS p_name, cp.path AS p_path, cp.namespace_id AS p_namespace_id,
  cp.description AS p_description, cp.default_branch AS p_default_branch, cp.visibility AS p_visibility,
  cp.creator_id AS p_creator_id, cp.created_at AS p_created_at,
  cn.id AS n_id, cn.name AS n_name, cn.path AS n_path, cn.kind AS n_kind, cn.parent_id AS n_parent_id,
  cn.full_path AS n_full_path, cn.full_name AS n_full_name, cn.owner_id AS n_owner_id,
  cn.visibility AS n_visibility, cn.description AS n_description, cn.created_at AS n_created_at`;

const AGENT_PROJECT_JOINS = `
  JOIN cluster_agents a ON a.id = auths.agent_id
  JOIN projects cp ON cp.id = a.project_id
  JOIN namespaces cn ON cn.id = cp.namespace_id`;

/** Ancestors of project :project (its namespace first, depth 0), bounded against cycles. */
const ANCESTORS_CTE = `
  ancestors (id, parent_id, depth) AS (
    SELECT n.id, n.parent_id, 0 FROM projects p JOIN namespaces n ON n.id = p.namespace_id WHERE p.id = :project
    UNION ALL
    SELECT n.id, n.parent_id, anc.depth + 1 FROM namespaces n JOIN ancestors anc ON n.id = anc.parent_id WHERE anc.depth < 64
  )`;

type AgentProjectRow = Record<string, unknown>;

function agentAndProject(row: AgentProjectRow): { agent: Agent; configProject: Project } {
  const n = (k: string) => row[`n_${k}`];
  const p = (k: string) => row[`p_${k}`];
  const namespace = namespaceFromRow({
    id: Number(n("id")),
    name: n("name") as string,
    path: n("path") as string,
    kind: n("kind") as string,
    parent_id: n("parent_id") == null ? null : Number(n("parent_id")),
    full_path: n("full_path") as string,
    full_name: n("full_name") as string,
    owner_id: n("owner_id") == null ? null : Number(n("owner_id")),
    visibility: n("visibility") as string,
    description: n("description") as string,
    created_at: n("created_at"),
  });
  const configProject = projectFromRow(
    {
      id: Number(p("id")),
      name: p("name") as string,
      path: p("path") as string,
      namespace_id: Number(p("namespace_id")),
      description: p("description") as string,
      default_branch: p("default_branch") as string,
      visibility: p("visibility") as string,
      creator_id: p("creator_id") == null ? null : Number(p("creator_id")),
      created_at: p("created_at"),
    },
    namespace,
  );
  const agent = agentFromRow({
    id: Number(row.a_id),
    name: row.a_name as string,
    project_id: Number(row.a_project_id),
    created_by_user_id: row.a_created_by_user_id == null ? null : Number(row.a_created_by_user_id),
    created_at: row.a_created_at,
  });
  return { agent, configProject };
}

function parseConfig(text: unknown): JsonObject {
  if (typeof text !== "string" || text === "") return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : {};
  } catch {
    return {};
  }
}

/**
 * The agents CI jobs of `projectId` may use, closest authorization first (GitLab's
 * `CiAccess::Finder`: the project's own entries, then the implicit one for agents configured in
 * the project itself, then group entries from the nearest group up). One SQL statement.
 */
export async function queryAllowedAgents(knex: Knex, projectId: number): Promise<AllowedAgent[]> {
  const sql = `
    WITH RECURSIVE ${ANCESTORS_CTE},
    auths (agent_id, config, source, depth, group_id) AS (
      SELECT agent_id, config, 0, 0, CAST(NULL AS INTEGER) FROM agent_ci_access_project_authorizations WHERE project_id = :project
      UNION ALL
      SELECT id, CAST(NULL AS TEXT), 1, 0, CAST(NULL AS INTEGER) FROM cluster_agents WHERE project_id = :project
      UNION ALL
      SELECT g.agent_id, g.config, 2, anc.depth, g.group_id
        FROM agent_ci_access_group_authorizations g JOIN ancestors anc ON anc.id = g.group_id
    )
    SELECT auths.config AS auth_config, auths.source AS auth_source, auths.group_id AS auth_group_id, ${AGENT_PROJECT_COLUMNS}
    FROM auths ${AGENT_PROJECT_JOINS}
    ORDER BY auths.source, auths.depth, a.id`;
  const rows = rowsOf<AgentProjectRow>(await knex.raw(sql, { project: projectId }));
  const seen = new Set<number>();
  const out: AllowedAgent[] = [];
  for (const row of rows) {
    const { agent, configProject } = agentAndProject(row);
    if (seen.has(agent.id)) continue;
    seen.add(agent.id);
    const source = Number(row.auth_source);
    const via = source === 0 ? "project" : source === 1 ? "implicit" : "group";
    out.push({
      agent,
      configProject,
      configuration: parseConfig(row.auth_config) as CiAccessAuthorizationConfig,
      via,
      ...(via === "group" ? { groupId: Number(row.auth_group_id) } : {}),
    });
  }
  return out;
}

export interface UserAccessFilter {
  /** Only this agent's authorizations. */
  agentId?: number;
  /** Only authorizations covering this project (its own entry, or its group or an ancestor's). */
  projectId?: number;
}

/**
 * The user_access authorizations `user` may use (GitLab's `UserAccess::Finder`): a project entry
 * when the user has Developer or more on the project (direct, inherited from a group, or owning its
 * personal namespace); a group entry when the user is a Developer or more member of the group or
 * one of its ancestors. Admins get every authorization. One SQL statement.
 */
export async function queryUserAccess(
  knex: Knex,
  user: { id: number; admin: boolean },
  filter: UserAccessFilter = {},
): Promise<UserAccessAuthorization[]> {
  const bindings: Record<string, number> = { user: user.id, project: filter.projectId ?? 0, agent: filter.agentId ?? 0 };
  const agentCond = filter.agentId === undefined ? "" : "AND x.agent_id = :agent";
  const projectCondP = filter.projectId === undefined ? "" : "AND x.project_id = :project";
  const projectCondG = filter.projectId === undefined ? "" : "AND x.group_id IN (SELECT id FROM ancestors)";
  // Membership in namespace `mn` covers namespace `t` when t is mn or below it.
  const covers = (t: string) => `(${t}.full_path = mn.full_path OR substr(${t}.full_path, 1, length(mn.full_path) + 1) = mn.full_path || '/')`;
  const groupLevel = (t: string) => `(SELECT MAX(nm.access_level) FROM namespace_members nm JOIN namespaces mn ON mn.id = nm.namespace_id
        WHERE nm.user_id = :user AND ${covers(t)})`;
  const sql = `
    WITH RECURSIVE ${ANCESTORS_CTE},
    auths (agent_id, config, kind, target_id, direct_level, group_level, owner_level) AS (
      SELECT x.agent_id, x.config, 'project', x.project_id,
        (SELECT MAX(pm.access_level) FROM project_members pm WHERE pm.project_id = x.project_id AND pm.user_id = :user),
        ${groupLevel("tn")},
        CASE WHEN tn.owner_id = :user THEN ${AccessLevel.OWNER} ELSE 0 END
      FROM agent_user_access_project_authorizations x
        JOIN projects tp ON tp.id = x.project_id JOIN namespaces tn ON tn.id = tp.namespace_id
      WHERE 1 = 1 ${agentCond} ${projectCondP}
      UNION ALL
      SELECT x.agent_id, x.config, 'group', x.group_id, CAST(NULL AS INTEGER), ${groupLevel("tg")}, 0
      FROM agent_user_access_group_authorizations x JOIN namespaces tg ON tg.id = x.group_id
      WHERE 1 = 1 ${agentCond} ${projectCondG}
    )
    SELECT auths.config AS auth_config, auths.kind AS auth_kind, auths.target_id AS auth_target_id,
      auths.direct_level AS auth_direct_level, auths.group_level AS auth_group_level, auths.owner_level AS auth_owner_level,
      ${AGENT_PROJECT_COLUMNS}
    FROM auths ${AGENT_PROJECT_JOINS}
    ORDER BY a.id, auths.kind DESC, auths.target_id`;
  const rows = rowsOf<AgentProjectRow>(await knex.raw(sql, bindings));
  const out: UserAccessAuthorization[] = [];
  for (const row of rows) {
    const level = user.admin
      ? AccessLevel.OWNER
      : Math.max(Number(row.auth_direct_level ?? 0), Number(row.auth_group_level ?? 0), Number(row.auth_owner_level ?? 0));
    if (level < AccessLevel.DEVELOPER) continue;
    const { agent, configProject } = agentAndProject(row);
    out.push({
      agent,
      configProject,
      configuration: parseConfig(row.auth_config) as UserAccessAuthorizationConfig,
      via: row.auth_kind === "group" ? "group" : "project",
      targetId: Number(row.auth_target_id),
      accessLevel: level,
    });
  }
  return out;
}
