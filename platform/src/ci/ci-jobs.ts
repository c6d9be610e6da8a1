/**
 * CI jobs and their job tokens. The platform stands in for a CI system: a job is created running
 * (with a pipeline of its own), optionally deploying to an environment, and gets a job token
 * (`glcbt-…`) that works until the job finishes or the token's lifetime ends, whichever comes
 * first. The store keeps only the token's digest.
 *
 * What a job token unlocks is GitLab's `GET /job/allowed_agents`: the agents whose `ci_access`
 * authorizes the job's project (directly, through a group, or implicitly as the agent's config
 * project), narrowed by each authorization's `environments`.
 */
import type { Knex } from "knex";
import { digestToken, digestsEqual } from "@kasbridge/sdk/auth";
import type { AgentConfigService } from "../agent-config/agent-config-service.js";
import type { AllowedAgent } from "../agent-config/authorizations.js";
import { isValidRevision } from "../git/git-names.js";
import type { ServiceContext } from "../services/context.js";
import { invalid, notFound } from "../services/errors.js";
import type { MemberService } from "../services/members.js";
import type { NamespaceService } from "../services/namespaces.js";
import type { Project, ProjectService } from "../services/projects.js";
import type { RevocationRecorder } from "../services/revocations.js";
import { userFromRow, type User } from "../services/users.js";
import { fromDbTime, fromDbTimeOrNull, isUniqueViolation, toDbTime } from "../store/db-util.js";
import {
  authorizationAppliesToEnvironment,
  environmentNameErrors,
  environmentSlug,
  guessEnvironmentTier,
  isEnvironmentTier,
  ENVIRONMENT_TIERS,
  type EnvironmentTier,
} from "./environments.js";
import { CI_JOB_TOKEN_MAX_LENGTH, CI_JOB_TOKEN_PREFIX, generateCiJobToken } from "./job-tokens.js";
import { rolesForAccessLevel } from "./roles.js";

/** Default lifetime of a job token: 1 hour (GitLab's default job timeout). */
export const DEFAULT_CI_JOB_TOKEN_TTL_MS = 60 * 60 * 1000;

export const CI_JOB_STATUSES = ["running", "success", "failed", "canceled"] as const;
export type CiJobStatus = (typeof CI_JOB_STATUSES)[number];
/** Statuses a job can be finished with. */
export const CI_JOB_FINISHED_STATUSES = ["success", "failed", "canceled"] as const;
export type CiJobFinishedStatus = (typeof CI_JOB_FINISHED_STATUSES)[number];

export interface CiEnvironment {
  id: number;
  projectId: number;
  name: string;
  slug: string;
  tier: EnvironmentTier;
}

export interface CiJob {
  id: number;
  pipelineId: number;
  projectId: number;
  userId: number;
  ref: string;
  status: CiJobStatus;
  environment: CiEnvironment | null;
  /** The job token stops working at this time even while the job runs. */
  tokenExpiresAt: Date;
  createdAt: Date;
  finishedAt: Date | null;
}

export interface CreateCiJobInput {
  /** Branch, tag or commit the job runs for. Default: the project's default branch. */
  ref?: string;
  /** Environment name; created on first use (GitLab's `environment:name`). */
  environment?: string;
  /** Deployment tier; default: guessed from the name for a new environment, kept for an existing one. */
  environmentTier?: string;
}

/** What a valid job token resolves to. */
export interface AuthenticatedCiJob {
  job: CiJob;
  project: Project;
  /** The user the job runs as (who created it). */
  user: User;
  environment: CiEnvironment | null;
}

/** Everything GitLab's `GET /job/allowed_agents` answers, for one job. */
export interface CiJobAllowedAgents extends AuthenticatedCiJob {
  /** The agents the job may use, closest authorization first, after the environment filter. */
  allowedAgents: AllowedAgent[];
  /** The project's group and its ancestors, nearest first; empty for a personal project. */
  projectGroupIds: number[];
  /** GitLab role names of the job's user in the project (every role up to theirs). */
  rolesInProject: string[];
}

export interface CiJobService {
  /** Starts a running job (in a new pipeline) and issues its token; the plaintext is returned only here. */
  create(projectId: number, userId: number, input?: CreateCiJobInput): Promise<{ job: CiJob; token: string }>;
  /** The job, when it belongs to `projectId`. */
  get(projectId: number, jobId: number): Promise<CiJob | undefined>;
  /**
   * Ends a running job with `status` (default "success"); its token stops working at once and the
   * revocation feed tells KAS, which ends the job's open Kubernetes API proxy streams. Finishing a
   * finished job changes nothing. Throws not_found when the job is not the project's.
   */
  finish(projectId: number, jobId: number, status?: CiJobFinishedStatus): Promise<CiJob>;
  /**
   * Resolves a job token to its running job, project and active user; undefined when the token is
   * unknown, its job finished, it expired, or the user is blocked. Looked up by digest and
   * compared in constant time.
   */
  authenticate(jobToken: string): Promise<AuthenticatedCiJob | undefined>;
  /** The agents a job may use (GitLab's CiAccess finder + environment filter). */
  allowedAgentsOf(auth: AuthenticatedCiJob): Promise<AllowedAgent[]>;
  /** authenticate + everything `GET /job/allowed_agents` answers; undefined for a token that does not authenticate. */
  allowedAgentsForJob(jobToken: string): Promise<CiJobAllowedAgents | undefined>;
}

export interface CiJobServiceOptions {
  /** Lifetime of a job token. Default 1 hour. */
  tokenTtlMs?: number;
}

export interface CiJobServiceDeps {
  projects: ProjectService;
  namespaces: NamespaceService;
  members: MemberService;
  agentConfigs: AgentConfigService;
  /** Where a finished job's token revocation is recorded and published. */
  revocations: RevocationRecorder;
}

interface JobRow {
  id: number;
  pipeline_id: number;
  project_id: number;
  user_id: number;
  ref: string;
  status: string;
  token_digest: string;
  token_expires_at: unknown;
  created_at: unknown;
  finished_at: unknown;
  env_id: number | null;
  env_project_id: number | null;
  env_name: string | null;
  env_slug: string | null;
  env_tier: string | null;
}

const JOB_COLUMNS = [
  "j.id",
  "j.pipeline_id",
  "j.project_id",
  "j.user_id",
  "j.ref",
  "j.status",
  "j.token_digest",
  "j.token_expires_at",
  "j.created_at",
  "j.finished_at",
  "e.id as env_id",
  "e.project_id as env_project_id",
  "e.name as env_name",
  "e.slug as env_slug",
  "e.tier as env_tier",
];

function jobFromRow(row: JobRow): CiJob {
  return {
    id: Number(row.id),
    pipelineId: Number(row.pipeline_id),
    projectId: Number(row.project_id),
    userId: Number(row.user_id),
    ref: row.ref,
    status: (CI_JOB_STATUSES as readonly string[]).includes(row.status) ? (row.status as CiJobStatus) : "failed",
    environment:
      row.env_id == null
        ? null
        : {
            id: Number(row.env_id),
            projectId: Number(row.env_project_id),
            name: row.env_name!,
            slug: row.env_slug!,
            tier: isEnvironmentTier(row.env_tier) ? row.env_tier : "other",
          },
    tokenExpiresAt: fromDbTime(row.token_expires_at),
    createdAt: fromDbTime(row.created_at),
    finishedAt: fromDbTimeOrNull(row.finished_at),
  };
}

export function createCiJobService(ctx: ServiceContext, deps: CiJobServiceDeps, options: CiJobServiceOptions = {}): CiJobService {
  const { knex } = ctx;
  const ttlMs = options.tokenTtlMs ?? DEFAULT_CI_JOB_TOKEN_TTL_MS;
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError("tokenTtlMs must be a positive number of milliseconds");

  const jobQuery = (db: Knex | Knex.Transaction = knex) =>
    db("ci_jobs as j").leftJoin("environments as e", "e.id", "j.environment_id").select(JOB_COLUMNS);

  async function getJob(where: Record<string, unknown>, db?: Knex | Knex.Transaction): Promise<CiJob | undefined> {
    const row = (await jobQuery(db).where(where).first()) as JobRow | undefined;
    return row && jobFromRow(row);
  }

  /** Finds the project's environment by name or creates it; updates the tier when one is given. */
  async function ensureEnvironment(trx: Knex.Transaction, projectId: number, name: string, tier: EnvironmentTier | undefined): Promise<number> {
    const existing = (await trx("environments").where({ project_id: projectId, name }).first("id", "tier")) as
      | { id: number; tier: string }
      | undefined;
    if (existing) {
      if (tier !== undefined && existing.tier !== tier) await trx("environments").where({ id: existing.id }).update({ tier });
      return Number(existing.id);
    }
    try {
      const [{ id }] = (await trx("environments")
        .insert({
          project_id: projectId,
          name,
          slug: environmentSlug(name),
          tier: tier ?? guessEnvironmentTier(name),
          created_at: toDbTime(ctx.now()),
        })
        .returning("id")) as { id: number }[];
      return Number(id);
    } catch (err) {
      // Another name with the same slug (a 6-character hash suffix collision), or a concurrent
      // creation of the same name: the caller retries once, finding the row in the second case.
      if (isUniqueViolation(err)) throw new EnvironmentConflict();
      throw err;
    }
  }

  async function authenticate(jobToken: string): Promise<AuthenticatedCiJob | undefined> {
    if (typeof jobToken !== "string" || !jobToken.startsWith(CI_JOB_TOKEN_PREFIX) || jobToken.length > CI_JOB_TOKEN_MAX_LENGTH) {
      return undefined;
    }
    const digest = digestToken(jobToken);
    const row = (await jobQuery().where("j.token_digest", digest).first()) as JobRow | undefined;
    if (!row || !digestsEqual(row.token_digest, digest)) return undefined;
    const job = jobFromRow(row);
    if (job.status !== "running" || ctx.now().getTime() >= job.tokenExpiresAt.getTime()) return undefined;
    const userRow = await knex("users").where({ id: job.userId }).first();
    if (!userRow) return undefined;
    const user = userFromRow(userRow);
    if (user.state !== "active") return undefined;
    const project = await deps.projects.get(job.projectId);
    if (!project) return undefined;
    return { job, project, user, environment: job.environment };
  }

  async function allowedAgentsOf(auth: AuthenticatedCiJob): Promise<AllowedAgent[]> {
    const all = await deps.agentConfigs.allowedAgentsForProject(auth.project.id);
    const environment = auth.environment?.name ?? null;
    return all.filter((a) => authorizationAppliesToEnvironment(a.configuration.environments, environment));
  }

  return {
    async create(projectId, userId, input = {}) {
      const project = await deps.projects.get(projectId);
      if (!project) throw notFound("Project");
      const ref = input.ref === undefined || input.ref === "" ? project.defaultBranch : input.ref;
      if (typeof ref !== "string" || !isValidRevision(ref)) throw invalid("ref is invalid", { ref: ["is invalid"] });
      const envName = input.environment === undefined || input.environment === "" ? undefined : input.environment;
      if (envName !== undefined) {
        const problems = typeof envName === "string" ? environmentNameErrors(envName) : ["is invalid"];
        if (problems.length) throw invalid(`environment ${problems.join(", ")}`, { environment: problems });
      }
      let tier: EnvironmentTier | undefined;
      if (input.environmentTier !== undefined && input.environmentTier !== "") {
        if (!isEnvironmentTier(input.environmentTier)) {
          throw invalid(`environment_tier must be one of ${ENVIRONMENT_TIERS.join(", ")}`, { environment_tier: ["is invalid"] });
        }
        if (envName === undefined) throw invalid("environment_tier needs an environment", { environment_tier: ["needs an environment"] });
        tier = input.environmentTier;
      }
      if (!(await knex("users").where({ id: userId }).first("id"))) throw notFound("User");

      const token = generateCiJobToken();
      const now = ctx.now();
      const insert = () =>
        knex.transaction(async (trx) => {
          const environmentId = envName === undefined ? null : await ensureEnvironment(trx, projectId, envName, tier);
          const [{ id: pipelineId }] = (await trx("ci_pipelines")
            .insert({ project_id: projectId, user_id: userId, ref, created_at: toDbTime(now) })
            .returning("id")) as { id: number }[];
          const [{ id }] = (await trx("ci_jobs")
            .insert({
              pipeline_id: pipelineId,
              project_id: projectId,
              user_id: userId,
              environment_id: environmentId,
              ref,
              status: "running",
              token_digest: digestToken(token),
              token_expires_at: toDbTime(new Date(now.getTime() + ttlMs)),
              created_at: toDbTime(now),
            })
            .returning("id")) as { id: number }[];
          return (await getJob({ "j.id": id }, trx))!;
        });
      let job: CiJob;
      try {
        job = await insert();
      } catch (err) {
        if (!(err instanceof EnvironmentConflict)) throw err;
        try {
          job = await insert();
        } catch (again) {
          if (again instanceof EnvironmentConflict) {
            throw invalid("environment slug has already been taken", { environment: ["slug has already been taken"] });
          }
          throw again;
        }
      }
      ctx.logger.info({ jobId: job.id, projectId, userId, environment: envName }, "CI job started");
      return { job, token };
    },

    get(projectId, jobId) {
      return getJob({ "j.id": jobId, "j.project_id": projectId });
    },

    async finish(projectId, jobId, status = "success") {
      if (!(CI_JOB_FINISHED_STATUSES as readonly string[]).includes(status)) {
        throw invalid(`status must be one of ${CI_JOB_FINISHED_STATUSES.join(", ")}`, { status: ["is invalid"] });
      }
      const revoked = [{ kind: "ci_job", jobId } as const];
      const { job, updated } = await knex.transaction(async (trx) => {
        const changed = await trx("ci_jobs")
          .where({ id: jobId, project_id: projectId, status: "running" })
          .update({ status, finished_at: toDbTime(ctx.now()) });
        if (changed > 0) await deps.revocations.record(trx, revoked);
        return { job: await getJob({ "j.id": jobId, "j.project_id": projectId }, trx), updated: changed };
      });
      if (!job) throw notFound("Job");
      if (updated > 0) {
        deps.revocations.publish(revoked);
        ctx.logger.info({ jobId, projectId, status }, "CI job finished; its token is revoked");
      }
      return job;
    },

    authenticate,
    allowedAgentsOf,

    async allowedAgentsForJob(jobToken) {
      const auth = await authenticate(jobToken);
      if (!auth) return undefined;
      const { project, user } = auth;
      const [allowedAgents, projectGroupIds, accessLevel] = await Promise.all([
        allowedAgentsOf(auth),
        project.namespace.kind === "group" ? deps.namespaces.selfAndAncestorIds(project.namespace) : Promise.resolve([]),
        deps.members.projectAccessLevel(user.id, project),
      ]);
      return { ...auth, allowedAgents, projectGroupIds, rolesInProject: rolesForAccessLevel(accessLevel) };
    },
  };
}

/** Internal: a unique violation while creating an environment (retried once). */
class EnvironmentConflict extends Error {
  constructor() {
    super("environment conflict");
  }
}
