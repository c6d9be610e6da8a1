import type { AuditEventInput, AuditTrail } from "../audit/audit-trail.js";
import type { Knex } from "knex";
import { create, fromJson, toJsonString, type JsonValue } from "@bufbuild/protobuf";
import { ConfigurationFileSchema, type ConfigurationFile } from "@kasbridge/sdk/gen/gitlab/agent/agentcfg/agentcfg_pb";
import type { AgentConfigurationSnapshot } from "@kasbridge/sdk/platform-client";
import type { ServiceContext } from "../services/context.js";
import { fromDbTime, fromDbTimeOrNull, toDbTime } from "../store/db-util.js";
import {
  queryAllowedAgents,
  queryUserAccess,
  replaceAuthorizations,
  resolveAuthorizations,
  type AllowedAgent,
  type UserAccessAuthorization,
  type UserAccessFilter,
} from "./authorizations.js";
import { checkAgentConfigFile, formatAgentConfigProblem } from "@kasbridge/sdk/agent-config";
import {
  agentConfigPath,
  agentNameOfConfigPath,
  branchOfRef,
  isZeroOid,
  type AgentConfigRepositories,
  type PushEvent,
} from "./repository.js";

/** The last config that could not be accepted. */
export interface AgentConfigRejection {
  /** Every problem, `path: message (line N)`, joined with "; ". */
  message: string;
  commitId: string;
  at: Date;
}

/** What the platform holds for one agent's configuration. */
export interface AgentConfigState {
  agentId: number;
  /** Commit of the accepted config; "" while none was accepted (the empty config applies). */
  commitId: string;
  config: ConfigurationFile;
  /** When the accepted config was stored; null while none was. */
  updatedAt: Date | null;
  /** The last rejected config, or null when the last processed commit was accepted. */
  error: AgentConfigRejection | null;
}

/** One entry of the change feed: the agent's accepted config moved to `commitId`. */
export interface AgentConfigChange {
  agentId: number;
  commitId: string;
}

export interface AgentConfigFeedPage {
  changes: AgentConfigChange[];
  /** Pass back as `after` to get what follows. */
  cursor: number;
}

export type AgentConfigApplyOutcome =
  | { status: "accepted"; state: AgentConfigState }
  /** The commit was already the accepted one; nothing written, no event. */
  | { status: "unchanged"; state: AgentConfigState }
  /** Invalid: the previous config stays, the error is recorded. */
  | { status: "rejected"; state: AgentConfigState }
  /** A push's commit that a later push of the branch replaced before it was applied: nothing written. */
  | { status: "superseded"; state: AgentConfigState }
  | { status: "agent_not_found" };

/** Checked with the agent's row locked: false when a push's commit is older than the accepted one. */
type StillCurrent = (trx: Knex.Transaction) => Promise<boolean>;

/** Listener errors are logged and never reach the processing. */
export type AgentConfigChangeListener = (change: AgentConfigChange) => void;

export interface AgentConfigService {
  /** The agent's config state; undefined for an unknown agent. An agent never configured gets the empty config. */
  get(agentId: number): Promise<AgentConfigState | undefined>;
  /** States of several agents in one query (unknown ids are left out). */
  getMany(agentIds: readonly number[]): Promise<Map<number, AgentConfigState>>;
  /** The accepted config as PlatformClient returns it; undefined for an unknown agent. */
  snapshot(agentId: number): Promise<AgentConfigurationSnapshot | undefined>;
  /**
   * Validates `content` as the agent's config file at `commitId` (undefined: the file is absent,
   * i.e. the empty config) and stores it with its authorizations, or records why it was rejected.
   * Runs in the agent's project queue, after every push queued before it.
   */
  apply(agentId: number, commitId: string, content: string | Uint8Array | undefined): Promise<AgentConfigApplyOutcome>;
  /**
   * Processes a push (what `attach` subscribes): on the project's default branch, every agent of
   * the project whose config file the push touched gets the file at the new commit. Resolves once
   * processed; pushes of a project are processed one at a time, in arrival order.
   */
  processPush(event: PushEvent): Promise<void>;
  /**
   * Reads the agent's config file from its project's default branch and applies it (used when an
   * agent is created after its config file). Undefined when there is no repository to read.
   */
  syncAgent(agentId: number): Promise<AgentConfigApplyOutcome | undefined>;
  /** Subscribes to `repositories` pushes and reads config files from it; returns a detach function. */
  attach(repositories: AgentConfigRepositories): () => void;
  /** Resolves when everything queued so far has been processed. */
  idle(): Promise<void>;
  /** Calls `listener` synchronously after each accepted config change commits; returns an unsubscribe function. */
  subscribe(listener: AgentConfigChangeListener): () => void;
  /**
   * Changes recorded after cursor `after`, oldest first, at most `limit`. Without `after`, returns
   * no changes and the current cursor, so a new watcher starts from "now".
   */
  feed(after: number | undefined, limit?: number): Promise<AgentConfigFeedPage>;
  /**
   * The agents CI jobs of the project may use, closest authorization first, with the ci_access
   * entry that applies (`default_namespace`, `access_as`, `environments`). One SQL query.
   */
  allowedAgentsForProject(projectId: number): Promise<AllowedAgent[]>;
  /** The user_access authorizations the user may use (Developer or more), optionally for one agent or project. */
  userAccessAgentsForUser(user: { id: number; admin: boolean }, filter?: UserAccessFilter): Promise<UserAccessAuthorization[]>;
}

export interface AgentConfigServiceOptions {
  /** How long feed entries are kept. Default 24 h. */
  feedRetentionMs?: number;
  /** Largest config file accepted. Default 128 KiB (GitLab KAS's default). */
  maxConfigBytes?: number;
  /** Where accepted and rejected configurations are recorded (agent activity). */
  audit?: Pick<AuditTrail, "record">;
}

interface ConfigRow {
  agent_id: number;
  commit_id: string;
  config: string;
  updated_at: unknown;
  error_message: string | null;
  error_commit_id: string | null;
  error_at: unknown;
}

const FEED_MAX_LIMIT = 1000;
const PRUNE_EVERY_MS = 60 * 60 * 1000;

export function emptyAgentConfig(): ConfigurationFile {
  return create(ConfigurationFileSchema);
}

function stateFromRow(agentId: number, row: ConfigRow | undefined, onBadJson: (err: unknown) => void): AgentConfigState {
  if (!row) return { agentId, commitId: "", config: emptyAgentConfig(), updatedAt: null, error: null };
  let config: ConfigurationFile;
  try {
    config = fromJson(ConfigurationFileSchema, JSON.parse(row.config) as JsonValue, { ignoreUnknownFields: true });
  } catch (err) {
    onBadJson(err);
    config = emptyAgentConfig();
  }
  return {
    agentId,
    commitId: row.commit_id,
    config,
    updatedAt: fromDbTimeOrNull(row.updated_at),
    error:
      row.error_message !== null && row.error_at !== null && row.error_at !== undefined
        ? { message: row.error_message, commitId: row.error_commit_id ?? "", at: fromDbTime(row.error_at) }
        : null,
  };
}

export function createAgentConfigService(ctx: ServiceContext, options: AgentConfigServiceOptions = {}): AgentConfigService {
  const { knex } = ctx;
  const retentionMs = options.feedRetentionMs ?? 24 * 60 * 60 * 1000;
  const listeners = new Set<AgentConfigChangeListener>();
  let lastPruneMs = 0;
  let repositories: AgentConfigRepositories | undefined;

  // ---- per-project queues ----
  const queues = new Map<number, Promise<unknown>>();
  function enqueue<T>(projectId: number, job: () => Promise<T>): Promise<T> {
    const previous = queues.get(projectId) ?? Promise.resolve();
    const run = previous.then(job, job);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    queues.set(projectId, tail);
    void tail.then(() => {
      if (queues.get(projectId) === tail) queues.delete(projectId);
    });
    return run;
  }

  const logBadJson = (agentId: number) => (err: unknown) =>
    ctx.logger.error({ err, agentId }, "stored agent configuration is not valid; serving the empty configuration");

  async function get(agentId: number): Promise<AgentConfigState | undefined> {
    const row = (await knex("cluster_agents as a")
      .leftJoin("agent_configurations as c", "c.agent_id", "a.id")
      .where("a.id", agentId)
      .first("a.id as id", "c.agent_id", "c.commit_id", "c.config", "c.updated_at", "c.error_message", "c.error_commit_id", "c.error_at")) as
      | (ConfigRow & { id: number })
      | undefined;
    if (!row) return undefined;
    return stateFromRow(agentId, row.agent_id == null ? undefined : row, logBadJson(agentId));
  }

  function publish(change: AgentConfigChange): void {
    for (const listener of [...listeners]) {
      try {
        listener({ ...change });
      } catch (err) {
        ctx.logger.error({ err, agentId: change.agentId }, "agent configuration listener failed");
      }
    }
  }

  /** The apply itself; callers run it inside the project's queue. */
  async function applyNow(
    agentId: number,
    commitId: string,
    content: string | Uint8Array | undefined,
    stillCurrent?: StillCurrent,
  ): Promise<AgentConfigApplyOutcome> {
    const agent = (await knex("cluster_agents").where({ id: agentId }).first("id", "name", "project_id")) as
      | { id: number; name: string; project_id: number }
      | undefined;
    if (!agent) return { status: "agent_not_found" };
    const parsed = content === undefined ? { ok: true as const, config: emptyAgentConfig() } : checkAgentConfigFile(content, { maxBytes: options.maxConfigBytes });
    const now = ctx.now();

    if (!parsed.ok) return recordRejection(agentId, commitId, parsed.problems.map(formatAgentConfigProblem).join("; "), stillCurrent);

    const before = await get(agentId);
    if (before && before.commitId === commitId && commitId !== "" && before.error === null) {
      return { status: "unchanged", state: before };
    }
    const configJson = toJsonString(ConfigurationFileSchema, parsed.config);
    const written = await knex.transaction(async (trx) => {
      if (!(await lockAgent(trx, agentId))) return false;
      if (stillCurrent && !(await stillCurrent(trx))) return "superseded";
      const resolved = await resolveAuthorizations(trx, agent.project_id, parsed.config);
      const row = {
        commit_id: commitId,
        config: configJson,
        updated_at: toDbTime(now),
        error_message: null,
        error_commit_id: null,
        error_at: null,
      };
      await trx("agent_configurations").insert({ agent_id: agentId, ...row }).onConflict("agent_id").merge(row);
      await replaceAuthorizations(trx, agentId, resolved);
      if (ctx.store.dialect === "postgres") {
        // Feed ids must become visible in id order (see revocations.ts); readers still get through.
        await trx.raw("LOCK TABLE agent_configuration_changes IN EXCLUSIVE MODE");
      }
      await trx("agent_configuration_changes").insert({ agent_id: agentId, commit_id: commitId, changed_at: toDbTime(now) });
      if (now.getTime() - lastPruneMs >= PRUNE_EVERY_MS) {
        lastPruneMs = now.getTime();
        await trx("agent_configuration_changes").where("changed_at", "<", toDbTime(new Date(now.getTime() - retentionMs))).delete();
      }
      return true;
    });
    if (!written) return { status: "agent_not_found" };
    if (written === "superseded") return superseded(agentId, commitId);
    ctx.logger.info({ agentId, commitId }, "agent configuration accepted");
    await options.audit?.record(configEvent("config_applied", agentId, commitId, null));
    publish({ agentId, commitId });
    return { status: "accepted", state: (await get(agentId))! };
  }

  /** Records why the config at `commitId` was not accepted; the accepted config stays. */
  async function recordRejection(agentId: number, commitId: string, message: string, stillCurrent?: StillCurrent): Promise<AgentConfigApplyOutcome> {
    const error = { error_message: message, error_commit_id: commitId, error_at: toDbTime(ctx.now()) };
    const written = await knex.transaction(async (trx) => {
      if (!(await lockAgent(trx, agentId))) return false;
      if (stillCurrent && !(await stillCurrent(trx))) return "superseded";
      const updated = await trx("agent_configurations").where({ agent_id: agentId }).update(error);
      if (updated === 0) await trx("agent_configurations").insert({ agent_id: agentId, commit_id: "", config: "{}", updated_at: null, ...error });
      return true;
    });
    if (written === "superseded") return superseded(agentId, commitId);
    const state = written ? await get(agentId) : undefined;
    if (!state) return { status: "agent_not_found" };
    ctx.logger.info({ agentId, commitId, error: message }, "agent configuration rejected");
    await options.audit?.record(configEvent("config_rejected", agentId, commitId, message));
    return { status: "rejected", state };
  }

  /** Locks the agent row against deletion for the transaction; false when it is gone. */
  async function lockAgent(trx: Knex.Transaction, agentId: number): Promise<boolean> {
    const q = trx("cluster_agents").where({ id: agentId });
    const row = ctx.store.dialect === "postgres" ? await q.forUpdate().first("id") : await q.first("id");
    return row !== undefined;
  }

  /**
   * A push's commit older than the accepted one: a later push of the branch (taken by another
   * replica sharing the repositories) was applied first. Nothing is written: the accepted config
   * never goes back to an older commit.
   */
  async function superseded(agentId: number, commitId: string): Promise<AgentConfigApplyOutcome> {
    ctx.logger.info({ agentId, commitId }, "agent configuration of a superseded commit skipped");
    const state = await get(agentId);
    return state ? { status: "superseded", state } : { status: "agent_not_found" };
  }

  /**
   * Applies the file at `commitId` to `agentId`, recording a read failure as the agent's error.
   * With `fromPush`, not when the accepted commit (read with the agent's row locked) is a later
   * commit of the branch: replicas processing pushes of one branch at once never step back.
   */
  async function applyFromRepository(agentId: number, projectId: number, agentName: string, commitId: string, fromPush = false): Promise<AgentConfigApplyOutcome> {
    const isAncestor = repositories!.isAncestor?.bind(repositories);
    const stillCurrent: StillCurrent | undefined =
      fromPush && isAncestor
        ? async (trx) => {
            const row = (await trx("agent_configurations").where({ agent_id: agentId }).first("commit_id")) as { commit_id: string } | undefined;
            const accepted = row?.commit_id ?? "";
            return accepted === "" || accepted === commitId || !(await isAncestor(projectId, commitId, accepted).catch(() => false));
          }
        : undefined;
    let content: Buffer | Uint8Array | undefined;
    try {
      content = await repositories!.readFile(projectId, commitId, agentConfigPath(agentName));
    } catch (err) {
      ctx.logger.error({ err, agentId, projectId, commitId }, "cannot read agent configuration file");
      return recordRejection(agentId, commitId, `cannot read ${agentConfigPath(agentName)}: ${(err as Error).message}`, stillCurrent);
    }
    return applyNow(agentId, commitId, content, stillCurrent);
  }

  async function processPushNow(event: PushEvent): Promise<void> {
    const branch = branchOfRef(event.ref);
    if (branch === undefined || isZeroOid(event.after)) return;
    const project = (await knex("projects").where({ id: event.projectId }).first("default_branch")) as
      | { default_branch: string }
      | undefined;
    if (!project || project.default_branch !== branch) return;
    let agents = (await knex("cluster_agents").where({ project_id: event.projectId }).select("id", "name")) as {
      id: number;
      name: string;
    }[];
    // A created branch compares against nothing: every agent's file may have appeared.
    if (!isZeroOid(event.before)) {
      const touched = new Set(event.changedPaths.map(agentNameOfConfigPath).filter((n): n is string => n !== undefined));
      agents = agents.filter((a) => touched.has(a.name));
    }
    for (const agent of agents) {
      try {
        await applyFromRepository(agent.id, event.projectId, agent.name, event.after, true);
      } catch (err) {
        ctx.logger.error({ err, agentId: agent.id, projectId: event.projectId, commitId: event.after }, "cannot process agent configuration");
      }
    }
  }

  return {
    get,

    async getMany(agentIds) {
      const out = new Map<number, AgentConfigState>();
      if (agentIds.length === 0) return out;
      const rows = (await knex("agent_configurations").whereIn("agent_id", [...agentIds])) as ConfigRow[];
      const byId = new Map(rows.map((r) => [r.agent_id, r]));
      const known = (await knex("cluster_agents").whereIn("id", [...agentIds]).pluck("id")) as number[];
      for (const id of known) out.set(id, stateFromRow(id, byId.get(id), logBadJson(id)));
      return out;
    },

    async snapshot(agentId) {
      const state = await get(agentId);
      return state && { agentId, commitId: state.commitId, config: state.config };
    },

    async apply(agentId, commitId, content) {
      const agent = (await knex("cluster_agents").where({ id: agentId }).first("project_id")) as { project_id: number } | undefined;
      if (!agent) return { status: "agent_not_found" };
      return enqueue(agent.project_id, () => applyNow(agentId, commitId, content));
    },

    processPush(event) {
      return enqueue(event.projectId, () => processPushNow(event));
    },

    async syncAgent(agentId) {
      if (!repositories) return undefined;
      const agent = (await knex("cluster_agents as a")
        .join("projects as p", "p.id", "a.project_id")
        .where("a.id", agentId)
        .first("a.id", "a.name", "a.project_id", "p.default_branch")) as
        | { id: number; name: string; project_id: number; default_branch: string }
        | undefined;
      if (!agent) return { status: "agent_not_found" };
      return enqueue(agent.project_id, async () => {
        const commitId = await repositories!.resolveRef(agent.project_id, agent.default_branch);
        // No repository or no default branch yet: nothing to read, the empty config applies.
        if (commitId === undefined) return { status: "unchanged" as const, state: (await get(agentId))! };
        return applyFromRepository(agent.id, agent.project_id, agent.name, commitId);
      });
    },

    attach(repos) {
      repositories = repos;
      const off = repos.onPush((event) => {
        void enqueue(event.projectId, () => processPushNow(event)).catch((err: unknown) => {
          ctx.logger.error({ err, projectId: event.projectId }, "cannot process push for agent configuration");
        });
      });
      return () => {
        if (typeof off === "function") off();
        if (repositories === repos) repositories = undefined;
      };
    },

    async idle() {
      while (queues.size > 0) await Promise.all([...queues.values()]);
    },

    subscribe(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },

    async feed(after, limit = FEED_MAX_LIMIT) {
      const max = (await knex("agent_configuration_changes").max({ id: "id" }).first()) as { id: unknown } | undefined;
      const maxId = max?.id == null ? 0 : Number(max.id);
      // A cursor beyond the newest entry means the database was replaced: restart from now.
      if (after === undefined || after > maxId) return { changes: [], cursor: maxId };
      const rows = (await knex("agent_configuration_changes")
        .where("id", ">", after)
        .orderBy("id")
        .limit(Math.max(1, Math.min(limit, FEED_MAX_LIMIT)))
        .select("id", "agent_id", "commit_id")) as { id: number; agent_id: number; commit_id: string }[];
      return {
        changes: rows.map((r) => ({ agentId: r.agent_id, commitId: r.commit_id })),
        cursor: rows.length > 0 ? rows[rows.length - 1]!.id : after,
      };
    },

    allowedAgentsForProject(projectId) {
      return queryAllowedAgents(knex, projectId);
    },

    userAccessAgentsForUser(user, filter) {
      return queryUserAccess(knex, user, filter);
    },
  };
}

/** Agent activity: a configuration the platform accepted or rejected (pushed to the config project). */
function configEvent(kind: "config_applied" | "config_rejected", agentId: number, commitId: string, error: string | null): AuditEventInput {
  return { kind, agent_id: agentId, actor: { kind: "platform" }, impersonated: null, request: null, details: { commit_id: commitId || null }, error };
}
