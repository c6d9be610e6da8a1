import type { Knex } from "knex";
import { wildcardMatch } from "../util/wildcard.js";
import { fromDbBool, fromDbTime, isUniqueViolation, toDbTime } from "../store/db-util.js";
import { AccessLevel } from "./access-levels.js";
import type { ServiceContext } from "./context.js";
import { conflict, invalid } from "./errors.js";

/**
 * A protected branch rule, as GitLab's free tier has them: a branch name or a wildcard pattern
 * (`release/*`, `*-stable`), one access level that may push and one that may merge, and whether
 * those who may push may also force-push.
 */
export interface ProtectedBranch {
  id: number;
  projectId: number;
  name: string;
  pushAccessLevel: number;
  mergeAccessLevel: number;
  allowForcePush: boolean;
  createdAt: Date;
}

/** The levels a rule may name (GitLab's `ProtectedRefAccess.allowed_access_levels`): No one, Developers, Maintainers, instance admins. */
export const PROTECTED_BRANCH_ACCESS_LEVELS: readonly number[] = [
  AccessLevel.NO_ACCESS,
  AccessLevel.DEVELOPER,
  AccessLevel.MAINTAINER,
  AccessLevel.ADMIN,
];

/** GitLab's names for those levels (`ProtectedRefAccess.human_access_levels`). */
export const PROTECTED_BRANCH_ACCESS_LEVEL_NAMES: Readonly<Record<number, string>> = {
  [AccessLevel.NO_ACCESS]: "No one",
  [AccessLevel.DEVELOPER]: "Developers + Maintainers",
  [AccessLevel.MAINTAINER]: "Maintainers",
  [AccessLevel.ADMIN]: "Instance admins",
};

/** GitLab's default branch protection ("fully protected"): Maintainers push and merge, nobody force-pushes. */
export const DEFAULT_BRANCH_PROTECTION = {
  pushAccessLevel: AccessLevel.MAINTAINER,
  mergeAccessLevel: AccessLevel.MAINTAINER,
  allowForcePush: false,
} as const;

/** Longest rule name accepted (git's own limit on ref names). */
export const PROTECTED_BRANCH_NAME_MAX_LENGTH = 1024;

export interface ProtectBranchInput {
  name: string;
  /** Default 40 (Maintainers). */
  pushAccessLevel?: number;
  /** Default 40 (Maintainers). */
  mergeAccessLevel?: number;
  /** Default false. */
  allowForcePush?: boolean;
}

export interface ProtectedBranchService {
  /** The project's rules by name; `search` keeps those whose name contains it (any case), as GitLab's `search`. */
  list(projectId: number, options?: { search?: string }): Promise<ProtectedBranch[]>;
  /** The rule with exactly this name (a wildcard is looked up as written, not matched). */
  get(projectId: number, name: string): Promise<ProtectedBranch | undefined>;
  /** The rules that apply to `branch`: its own name and every wildcard matching it. */
  matching(projectId: number, branch: string): Promise<ProtectedBranch[]>;
  /** Adds a rule; ServiceError("conflict") when the name is protected already, ("invalid") for bad input. */
  protect(projectId: number, input: ProtectBranchInput): Promise<ProtectedBranch>;
  /** Removes the rule with exactly this name; false when there is none. */
  unprotect(projectId: number, name: string): Promise<boolean>;
}

interface ProtectedBranchRow {
  id: number;
  project_id: number;
  name: string;
  push_access_level: number;
  merge_access_level: number;
  allow_force_push: unknown;
  created_at: unknown;
}

function fromRow(row: ProtectedBranchRow): ProtectedBranch {
  return {
    id: row.id,
    projectId: row.project_id,
    name: row.name,
    pushAccessLevel: Number(row.push_access_level),
    mergeAccessLevel: Number(row.merge_access_level),
    allowForcePush: fromDbBool(row.allow_force_push),
    createdAt: fromDbTime(row.created_at),
  };
}

/** Whether a rule applies to `branch` (GitLab's `RefMatcher`: the exact name, or the wildcard pattern matching the whole name). */
export function protectedBranchMatches(rule: Pick<ProtectedBranch, "name">, branch: string): boolean {
  return wildcardMatch(rule.name, branch);
}

/**
 * Whether a user with `access` to the project (OWNER for admins) satisfies a rule's access
 * `level` (GitLab's `ProtectedRefAccess#check_access`): No one is nobody, not even an admin;
 * instance admins only admins; otherwise the user's role must be at least the level.
 */
export function protectedAccessAllows(level: number, access: number, isAdmin: boolean): boolean {
  if (level === AccessLevel.NO_ACCESS) return false;
  if (level === AccessLevel.ADMIN) return isAdmin;
  return isAdmin || access >= level;
}

/** Protects a new project's default branch the way GitLab does by default; `db` is the project's creation transaction. */
export async function protectDefaultBranch(db: Knex | Knex.Transaction, projectId: number, branch: string, now: Date): Promise<void> {
  await db("protected_branches").insert({
    project_id: projectId,
    name: branch,
    push_access_level: DEFAULT_BRANCH_PROTECTION.pushAccessLevel,
    merge_access_level: DEFAULT_BRANCH_PROTECTION.mergeAccessLevel,
    allow_force_push: DEFAULT_BRANCH_PROTECTION.allowForcePush,
    created_at: toDbTime(now),
  });
}

export function createProtectedBranchService(ctx: ServiceContext): ProtectedBranchService {
  const { knex } = ctx;

  async function list(projectId: number, options: { search?: string } = {}): Promise<ProtectedBranch[]> {
    const rows = (await knex("protected_branches").where({ project_id: projectId }).orderBy([
      { column: "name" },
      { column: "id" },
    ])) as ProtectedBranchRow[];
    const search = options.search?.toLowerCase();
    return rows.map(fromRow).filter((b) => !search || b.name.toLowerCase().includes(search));
  }

  function checkLevel(value: number | undefined, field: string): number | undefined {
    if (value !== undefined && !PROTECTED_BRANCH_ACCESS_LEVELS.includes(value)) throw invalid(`${field} does not have a valid value`);
    return value;
  }

  return {
    list,

    async get(projectId, name) {
      const row = (await knex("protected_branches").where({ project_id: projectId, name }).first()) as ProtectedBranchRow | undefined;
      return row && fromRow(row);
    },

    async matching(projectId, branch) {
      return (await list(projectId)).filter((rule) => protectedBranchMatches(rule, branch));
    },

    async protect(projectId, input) {
      const name = input.name;
      if (typeof name !== "string" || name.trim() === "") throw invalid("Name can't be blank", { name: ["can't be blank"] });
      if (name.length > PROTECTED_BRANCH_NAME_MAX_LENGTH) {
        throw invalid(`Name is too long (maximum is ${PROTECTED_BRANCH_NAME_MAX_LENGTH} characters)`);
      }
      const push = checkLevel(input.pushAccessLevel, "push_access_level") ?? DEFAULT_BRANCH_PROTECTION.pushAccessLevel;
      const merge = checkLevel(input.mergeAccessLevel, "merge_access_level") ?? DEFAULT_BRANCH_PROTECTION.mergeAccessLevel;
      const exists = () => conflict(`Protected branch '${name}' already exists`);
      if (await knex("protected_branches").where({ project_id: projectId, name }).first("id")) throw exists();
      try {
        const [{ id }] = (await knex("protected_branches")
          .insert({
            project_id: projectId,
            name,
            push_access_level: push,
            merge_access_level: merge,
            allow_force_push: input.allowForcePush ?? false,
            created_at: toDbTime(ctx.now()),
          })
          .returning("id")) as { id: number }[];
        return fromRow((await knex("protected_branches").where({ id }).first()) as ProtectedBranchRow);
      } catch (err) {
        if (isUniqueViolation(err)) throw exists();
        throw err;
      }
    },

    async unprotect(projectId, name) {
      return (await knex("protected_branches").where({ project_id: projectId, name }).delete()) > 0;
    },
  };
}
