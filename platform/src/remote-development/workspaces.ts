/**
 * Remote development workspaces: created from a project's devfile for an agent that has remote
 * development enabled, changed by their owner (desired state), and reconciled with the agent,
 * which reports what runs (actual state) and gets back what to apply.
 */
import { randomInt } from "node:crypto";
import type { Knex } from "knex";
import { fromDbBool, fromDbTime, fromDbTimeOrNull, toDbTime } from "../store/db-util.js";
import type { AgentConfigService } from "../agent-config/agent-config-service.js";
import type { RepositoryService } from "../git/repositories.js";
import type { ServiceContext } from "../services/context.js";
import { ServiceError, invalid, notFound } from "../services/errors.js";
import type { Project } from "../services/projects.js";
import type { AgentService } from "../services/agents.js";
import type { ProjectService } from "../services/projects.js";
import { remoteDevelopmentSettings } from "./agent-settings.js";
import { desiredConfigYaml, type WorkspaceVariable } from "./desired-config.js";
import { DevfileError, MAX_DEVFILE_BYTES, parseDevfile, type Devfile } from "./devfile.js";
import { DESIRED_STATES, actualStateOf, type WorkspaceAgentInfo, type WorkspaceState } from "./states.js";
import { checkWorkspaceVariables, openVariables, sealVariables } from "./workspace-variables.js";
import type { SecretBox } from "../util/secret-box.js";

/** GitLab's default and largest `max_hours_before_termination`. */
export const DEFAULT_MAX_HOURS_BEFORE_TERMINATION = 24;
export const MAX_HOURS_BEFORE_TERMINATION_LIMIT = 120;

export interface Workspace {
  id: number;
  userId: number;
  projectId: number;
  agentId: number;
  name: string;
  namespace: string;
  dnsZone: string;
  desiredState: WorkspaceState;
  desiredStateUpdatedAt: Date;
  actualState: WorkspaceState;
  respondedToAgentAt: Date | null;
  deploymentResourceVersion: string | null;
  devfileRef: string;
  devfilePath: string;
  devfile: string;
  maxHoursBeforeTermination: number;
  forceIncludeAllResources: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export interface CreateWorkspaceInput {
  agentId: number;
  devfileRef: string;
  devfilePath: string;
  maxHoursBeforeTermination?: number;
  /** The user's variables: environment variables and files in the workspace's Secrets. */
  variables?: readonly WorkspaceVariable[];
}

export interface ReconcileRequest {
  update_type: "full" | "partial";
  workspace_agent_infos: WorkspaceAgentInfo[];
}

export interface WorkspaceRailsInfo {
  name: string;
  namespace: string;
  deployment_resource_version: string | null;
  actual_state: WorkspaceState;
  desired_state: WorkspaceState;
  config_to_apply: string | null;
}

export interface WorkspaceService {
  /** Creates a workspace of `userId` in `project`; ServiceError("invalid") names what is wrong. */
  create(userId: number, project: Project, input: CreateWorkspaceInput): Promise<Workspace>;
  /** The project's workspaces, newest first; only `userId`'s unless undefined (admins). */
  list(projectId: number, userId: number | undefined): Promise<Workspace[]>;
  get(projectId: number, workspaceId: number): Promise<Workspace | undefined>;
  /** The workspace named `name` (names are unique), whatever its project. */
  findByName(name: string): Promise<Workspace | undefined>;
  /** Sets the desired state (Running, RestartRequested, Stopped, Terminated). */
  updateDesiredState(workspace: Workspace, desiredState: string): Promise<Workspace>;
  /** One reconcile of an agent: records what it reports, answers what it should apply. */
  reconcile(agentId: number, request: ReconcileRequest): Promise<WorkspaceRailsInfo[]>;
}

interface Row {
  id: number;
  user_id: number;
  project_id: number;
  cluster_agent_id: number;
  name: string;
  namespace: string;
  dns_zone: string;
  desired_state: string;
  desired_state_updated_at: unknown;
  actual_state: string;
  responded_to_agent_at: unknown;
  deployment_resource_version: string | null;
  devfile_ref: string;
  devfile_path: string;
  devfile: string;
  max_hours_before_termination: number;
  force_include_all_resources: unknown;
  created_at: unknown;
  updated_at: unknown;
}

function fromRow(r: Row): Workspace {
  return {
    id: r.id,
    userId: r.user_id,
    projectId: r.project_id,
    agentId: r.cluster_agent_id,
    name: r.name,
    namespace: r.namespace,
    dnsZone: r.dns_zone,
    desiredState: r.desired_state as WorkspaceState,
    desiredStateUpdatedAt: fromDbTime(r.desired_state_updated_at),
    actualState: r.actual_state as WorkspaceState,
    respondedToAgentAt: fromDbTimeOrNull(r.responded_to_agent_at),
    deploymentResourceVersion: r.deployment_resource_version,
    devfileRef: r.devfile_ref,
    devfilePath: r.devfile_path,
    devfile: r.devfile,
    maxHoursBeforeTermination: r.max_hours_before_termination,
    forceIncludeAllResources: fromDbBool(r.force_include_all_resources),
    createdAt: fromDbTime(r.created_at),
    updatedAt: fromDbTime(r.updated_at),
  };
}

const RANDOM_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
function randomSuffix(): string {
  let s = "";
  for (let i = 0; i < 6; i++) s += RANDOM_ALPHABET[randomInt(RANDOM_ALPHABET.length)];
  return s;
}

/** The root group (or user namespace) of a path such as "group/sub/project". */
const rootNamespace = (pathWithNamespace: string) => pathWithNamespace.split("/")[0];

export function createWorkspaceService(
  ctx: ServiceContext,
  deps: {
    agents: AgentService;
    projects: ProjectService;
    agentConfigs: AgentConfigService;
    repositories: RepositoryService;
    /** Encrypts variables at rest; without it, workspaces with variables are refused. */
    secrets?: SecretBox;
  },
): WorkspaceService {
  const { knex, now } = ctx;

  async function byId(db: Knex | Knex.Transaction, id: number): Promise<Workspace | undefined> {
    const row = (await db("workspaces").where({ id }).first()) as Row | undefined;
    return row && fromRow(row);
  }

  /** The devfile text at ref:path, checked; ServiceError("invalid") otherwise. */
  async function readDevfile(project: Project, ref: string, path: string): Promise<string> {
    const content = await deps.repositories.readFile(project.id, ref, path, { maxBytes: MAX_DEVFILE_BYTES });
    if (content === undefined) throw invalid(`Devfile ${path} not found at ref ${ref}`, { devfile_path: ["not found"] });
    const text = content.toString("utf8");
    try {
      parseDevfile(text);
    } catch (err) {
      if (err instanceof DevfileError) throw invalid(`Invalid devfile ${path}: ${err.message}`, { devfile: [err.message] });
      throw err;
    }
    return text;
  }

  function configToApply(
    w: Workspace,
    devfile: Devfile,
    includeAllResources: boolean,
    settings: ReturnType<typeof remoteDevelopmentSettings>,
    variables: readonly WorkspaceVariable[],
  ): string {
    return desiredConfigYaml({
      workspaceId: w.id,
      name: w.name,
      namespace: w.namespace,
      agentId: w.agentId,
      dnsZone: w.dnsZone,
      running: w.desiredState === "Running",
      devfile,
      networkPolicyEnabled: settings.networkPolicyEnabled,
      proxyNamespace: settings.proxyNamespace,
      includeAllResources,
      variables,
    });
  }

  return {
    async create(userId, project, input) {
      const maxHours = input.maxHoursBeforeTermination ?? DEFAULT_MAX_HOURS_BEFORE_TERMINATION;
      if (!Number.isInteger(maxHours) || maxHours < 1 || maxHours > MAX_HOURS_BEFORE_TERMINATION_LIMIT) {
        throw invalid(`max_hours_before_termination must be an integer from 1 to ${MAX_HOURS_BEFORE_TERMINATION_LIMIT}`);
      }
      const agent = await deps.agents.getById(input.agentId);
      const agentProject = agent && (await deps.projects.get(agent.projectId));
      // GitLab offers only agents of the workspace project's root group.
      if (!agent || !agentProject || rootNamespace(agentProject.pathWithNamespace) !== rootNamespace(project.pathWithNamespace)) {
        throw invalid(`Cluster agent ${input.agentId} not found in the project's top-level group`, { cluster_agent_id: ["not found"] });
      }
      const settings = remoteDevelopmentSettings((await deps.agentConfigs.get(agent.id))?.config);
      if (!settings.enabled) throw invalid(`Cluster agent ${agent.name} does not have remote development enabled`, { cluster_agent_id: ["remote development is not enabled"] });
      if (input.devfileRef === "" || input.devfilePath === "") throw invalid("devfile_ref and devfile_path are required");
      const variables = checkWorkspaceVariables(input.variables ?? []);
      if (variables.length > 0 && !deps.secrets) {
        throw invalid("Workspace variables need the platform's encryption key (encryption_key_file), which is not configured", { variables: ["cannot be stored"] });
      }
      const devfile = await readDevfile(project, input.devfileRef, input.devfilePath);
      const suffix = randomSuffix();
      const at = toDbTime(now());
      return knex.transaction(async (trx) => {
        const [row] = (await trx("workspaces")
          .insert({
            user_id: userId,
            project_id: project.id,
            cluster_agent_id: agent.id,
            name: `workspace-${agent.id}-${userId}-${suffix}`,
            namespace: `gl-rd-ns-${agent.id}-${userId}-${suffix}`,
            dns_zone: settings.dnsZone,
            desired_state: "Running",
            desired_state_updated_at: at,
            actual_state: "CreationRequested",
            devfile_ref: input.devfileRef,
            devfile_path: input.devfilePath,
            devfile,
            max_hours_before_termination: maxHours,
            force_include_all_resources: true,
            created_at: at,
            updated_at: at,
          })
          .returning("id")) as Array<{ id: number } | number>;
        const id = typeof row === "number" ? row : row!.id;
        if (variables.length > 0) await trx("workspace_variables").insert(sealVariables(deps.secrets!, id, variables));
        return (await byId(trx, id))!;
      });
    },

    async list(projectId, userId) {
      const q = knex("workspaces").where({ project_id: projectId }).orderBy("id", "desc");
      if (userId !== undefined) void q.andWhere({ user_id: userId });
      return ((await q) as Row[]).map(fromRow);
    },

    async get(projectId, workspaceId) {
      const w = await byId(knex, workspaceId);
      return w && w.projectId === projectId ? w : undefined;
    },

    async findByName(name) {
      const row = (await knex("workspaces").where({ name }).first()) as Row | undefined;
      return row && fromRow(row);
    },

    async updateDesiredState(workspace, desiredState) {
      if (!DESIRED_STATES.includes(desiredState as WorkspaceState)) {
        throw invalid(`desired_state must be one of ${DESIRED_STATES.join(", ")}`, { desired_state: ["is not a desired state"] });
      }
      if (workspace.desiredState === "Terminated") throw new ServiceError("conflict", "A terminated workspace cannot be changed");
      const at = toDbTime(now());
      await knex("workspaces").where({ id: workspace.id }).update({ desired_state: desiredState, desired_state_updated_at: at, updated_at: at });
      return (await byId(knex, workspace.id)) ?? Promise.reject(notFound("Workspace"));
    },

    async reconcile(agentId, request) {
      const settings = remoteDevelopmentSettings((await deps.agentConfigs.get(agentId))?.config);
      const full = request.update_type === "full";
      const reported = new Map(request.workspace_agent_infos.map((i) => [i.name, i]));
      return knex.transaction(async (trx) => {
        const at = now();
        const rows = (await trx("workspaces")
          .where({ cluster_agent_id: agentId })
          .andWhere((q) => void q.whereNot({ actual_state: "Terminated" }).orWhereIn("name", [...reported.keys()]))
          .orderBy("id")) as Row[];
        const answers: WorkspaceRailsInfo[] = [];
        for (const row of rows) {
          const w = fromRow(row);
          const changes: Partial<Row> = {};
          const info = reported.get(w.name);
          if (info) {
            w.actualState = actualStateOf(info);
            changes.actual_state = w.actualState;
            const version = info.latest_k8s_deployment_info?.metadata?.resourceVersion;
            if (version) changes.deployment_resource_version = w.deploymentResourceVersion = version;
          }
          // A restart is a stop followed by a start: once stopped, the workspace should run again.
          if (w.desiredState === "RestartRequested" && w.actualState === "Stopped") setDesired(w, changes, "Running", at);
          if (w.desiredState !== "Terminated" && at.getTime() >= w.createdAt.getTime() + w.maxHoursBeforeTermination * 3_600_000) {
            setDesired(w, changes, "Terminated", at);
          }
          const desiredChanged = w.respondedToAgentAt === null || w.desiredStateUpdatedAt.getTime() >= w.respondedToAgentAt.getTime();
          if (full || desiredChanged || info !== undefined || w.forceIncludeAllResources) {
            const withConfig = full || desiredChanged || w.forceIncludeAllResources;
            const includeAll = full || w.forceIncludeAllResources;
            answers.push({
              name: w.name,
              namespace: w.namespace,
              deployment_resource_version: w.deploymentResourceVersion,
              actual_state: w.actualState,
              desired_state: w.desiredState,
              config_to_apply:
                withConfig && w.desiredState !== "Terminated"
                  ? configToApply(w, parseDevfile(w.devfile), includeAll, settings, includeAll ? await openVariables(trx, deps.secrets, w.id) : [])
                  : null,
            });
            Object.assign(changes, { responded_to_agent_at: toDbTime(at), force_include_all_resources: false });
          }
          if (Object.keys(changes).length > 0) await trx("workspaces").where({ id: w.id }).update({ ...changes, updated_at: toDbTime(at) });
        }
        return answers;
      });
    },
  };
}

function setDesired(w: Workspace, changes: Partial<Row>, state: WorkspaceState, at: Date): void {
  w.desiredState = state;
  w.desiredStateUpdatedAt = at;
  changes.desired_state = state;
  changes.desired_state_updated_at = toDbTime(at);
}
