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
import { desiredConfigYaml, mainContainers, type WorkspaceVariable } from "./desired-config.js";
import { DevfileError, MAX_DEVFILE_BYTES, parseDevfile, type Devfile, type DevfileEndpoint } from "./devfile.js";
import { DESIRED_STATES, actualStateOf, type WorkspaceAgentInfo, type WorkspaceState } from "./states.js";
import { checkWorkspaceVariables, openVariables, sealVariables } from "./workspace-variables.js";
import type { SecretBox } from "../util/secret-box.js";
import type { PersonalAccessTokenService } from "../services/personal-access-tokens.js";
import type { UserService } from "../services/users.js";
import { DEFAULT_WORKSPACE_TOOL_IMAGES, checkToolsFit, internalVariables, withWorkspaceTools, type WorkspaceProject, type WorkspaceToolImages } from "./workspace-tools.js";

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
  /** The project the workspace clones (none for workspaces created before the cloner existed). */
  project: WorkspaceProject | undefined;
  /** The personal access token made for the workspace's git; revoked when it is terminated. */
  personalAccessTokenId: number | null;
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
  /** The project's git URL as the workspace reaches it (REST: `http_url_to_repo`); no cloner without it. */
  repositoryUrl?: string;
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
  project_path: string | null;
  repository_url: string | null;
  project_ref: string | null;
  personal_access_token_id: number | null;
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
    project: r.project_path && r.repository_url && r.project_ref ? { path: r.project_path, repositoryUrl: r.repository_url, ref: r.project_ref } : undefined,
    personalAccessTokenId: r.personal_access_token_id,
    createdAt: fromDbTime(r.created_at),
    updatedAt: fromDbTime(r.updated_at),
  };
}

/** The devfile a workspace runs: its own, with GitLab's editor and project cloner (images do not matter here). */
export function workspaceDevfile(w: Workspace, images: WorkspaceToolImages = DEFAULT_WORKSPACE_TOOL_IMAGES): Devfile {
  return withWorkspaceTools(parseDevfile(w.devfile), w.project, images);
}

/** The endpoints users reach (`exposure: public`) of the workspace's long-running containers, the editor's included. */
export function workspaceEndpoints(w: Workspace): DevfileEndpoint[] {
  return mainContainers(workspaceDevfile(w)).flatMap((c) => c.endpoints.filter((e) => e.exposure === "public"));
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
    users: UserService;
    personalAccessTokens: PersonalAccessTokenService;
    /** Encrypts variables at rest; without it, workspaces cannot be created (their git token is one). */
    secrets?: SecretBox;
    /** Images of the editor injector and the project cloner. Default GitLab's. */
    toolImages?: WorkspaceToolImages;
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
      checkToolsFit(parseDevfile(text));
    } catch (err) {
      if (err instanceof DevfileError) throw invalid(`Invalid devfile ${path}: ${err.message}`, { devfile: [err.message] });
      throw err;
    }
    return text;
  }

  const toolImages = deps.toolImages ?? DEFAULT_WORKSPACE_TOOL_IMAGES;

  function configToApply(
    w: Workspace,
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
      devfile: workspaceDevfile(w, toolImages),
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
      const secrets = deps.secrets;
      if (!secrets) throw invalid("Workspaces need the platform's encryption key (encryption_key_file), which is not configured");
      const devfile = await readDevfile(project, input.devfileRef, input.devfilePath);
      const user = await deps.users.get(userId);
      if (!user) throw notFound("User");
      const suffix = randomSuffix();
      const name = `workspace-${agent.id}-${userId}-${suffix}`;
      const at = toDbTime(now());
      // The workspace's git uses a token of its own, ending with it (GitLab does the same).
      const expiresAt = new Date(now().getTime() + (maxHours + 24) * 3_600_000).toISOString().slice(0, 10);
      const pat = await deps.personalAccessTokens.create(userId, { name, scopes: ["read_repository", "write_repository"], expiresAt, description: "Workspace git access" });
      const all = [
        ...variables.map((v) => ({ ...v, userProvided: true })),
        ...internalVariables({ workspaceName: name, dnsZone: settings.dnsZone, token: pat.secret, userName: user.name, userEmail: user.email ?? `${user.username}@noreply.invalid` }).map((v) => ({ ...v, userProvided: false })),
      ];
      return knex.transaction(async (trx) => {
        const [row] = (await trx("workspaces")
          .insert({
            user_id: userId,
            project_id: project.id,
            cluster_agent_id: agent.id,
            name,
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
            project_path: project.path,
            repository_url: input.repositoryUrl ?? null,
            project_ref: input.repositoryUrl ? input.devfileRef : null,
            personal_access_token_id: pat.token.id,
            created_at: at,
            updated_at: at,
          })
          .returning("id")) as Array<{ id: number } | number>;
        const id = typeof row === "number" ? row : row!.id;
        await trx("workspace_variables").insert(sealVariables(secrets, id, all));
        return (await byId(trx, id))!;
      }).catch(async (err: unknown) => {
        await deps.personalAccessTokens.revoke(userId, pat.token.id).catch(() => {});
        throw err;
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
      /** Tokens of workspaces this reconcile saw terminated: revoked once it is committed. */
      const ended: Array<{ userId: number; tokenId: number }> = [];
      const railsInfos = await knex.transaction(async (trx) => {
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
            if (w.actualState === "Terminated" && row.actual_state !== "Terminated" && w.personalAccessTokenId !== null) {
              ended.push({ userId: w.userId, tokenId: w.personalAccessTokenId });
            }
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
                  ? configToApply(w, includeAll, settings, includeAll ? await openVariables(trx, deps.secrets, w.id) : [])
                  : null,
            });
            Object.assign(changes, { responded_to_agent_at: toDbTime(at), force_include_all_resources: false });
          }
          if (Object.keys(changes).length > 0) await trx("workspaces").where({ id: w.id }).update({ ...changes, updated_at: toDbTime(at) });
        }
        return answers;
      });
      for (const { userId, tokenId } of ended) {
        await deps.personalAccessTokens.revoke(userId, tokenId).catch((err: unknown) => {
          ctx.logger.error({ err, tokenId }, "cannot revoke a terminated workspace's token; it expires on its own");
        });
      }
      return railsInfos;
    },
  };
}

function setDesired(w: Workspace, changes: Partial<Row>, state: WorkspaceState, at: Date): void {
  w.desiredState = state;
  w.desiredStateUpdatedAt = at;
  changes.desired_state = state;
  changes.desired_state_updated_at = toDbTime(at);
}
