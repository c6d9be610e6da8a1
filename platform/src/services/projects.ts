import { MAX_DB_ID, fromDbTime, isUniqueViolation, toDbTime } from "../store/db-util.js";
import { AccessLevel } from "./access-levels.js";
import type { ServiceContext } from "./context.js";
import { invalid, notFound } from "./errors.js";
import type { Namespace, NamespaceService } from "./namespaces.js";
import { protectDefaultBranch } from "./protected-branches.js";
import {
  optionalString,
  parseVisibility,
  pathErrors,
  pathFromName,
  projectNameErrors,
  type Visibility,
} from "./validation.js";

export interface Project {
  id: number;
  name: string;
  path: string;
  namespace: Namespace;
  /** `namespace.fullPath + "/" + path`. */
  pathWithNamespace: string;
  /** `namespace.fullName + " / " + name`. */
  nameWithNamespace: string;
  description: string;
  defaultBranch: string;
  visibility: Visibility;
  creatorId: number | null;
  createdAt: Date;
}

export interface CreateProjectInput {
  /** Defaults to `path` when absent. */
  name?: string;
  /** Defaults to a slug of `name` when absent. */
  path?: string;
  namespaceId: number;
  description?: string;
  /** Default "main". */
  defaultBranch?: string;
  /** Default "private". */
  visibility?: Visibility;
}

export interface ProjectService {
  /**
   * Creates a project; `creatorId` (if any) becomes its owner member, so the creator manages it
   * even in a group where they hold a lower role. Its default branch is protected as GitLab does
   * by default (Maintainers push and merge, no force push). Authorization is the caller's job.
   */
  create(input: CreateProjectInput, creatorId: number | null): Promise<Project>;
  get(id: number): Promise<Project | undefined>;
  /** By full path, e.g. "group/sub/project". */
  getByFullPath(fullPath: string): Promise<Project | undefined>;
  /** By numeric id ("42") or full path ("group/project"), as GitLab's `:id` parameters. */
  find(idOrPath: string | number): Promise<Project | undefined>;
}

export interface ProjectRow {
  id: number;
  name: string;
  path: string;
  namespace_id: number;
  description: string;
  default_branch: string;
  visibility: string;
  creator_id: number | null;
  created_at: unknown;
}

export function projectFromRow(row: ProjectRow, namespace: Namespace): Project {
  return {
    id: row.id,
    name: row.name,
    path: row.path,
    namespace,
    pathWithNamespace: `${namespace.fullPath}/${row.path}`,
    nameWithNamespace: `${namespace.fullName} / ${row.name}`,
    description: row.description,
    defaultBranch: row.default_branch,
    visibility: parseVisibility(row.visibility, "private"),
    creatorId: row.creator_id,
    createdAt: fromDbTime(row.created_at),
  };
}

// Git ref names (git check-ref-format, simplified): no whitespace, control characters, "..",
// "@{", any of ~^:?*[\, no leading "/" or "//", and not ending in "/", "." or ".lock".
function isValidBranchName(name: string): boolean {
  if (name.length === 0 || name.length > 255) return false;
  for (const ch of name) {
    const code = ch.codePointAt(0)!;
    if (code < 0x20 || code === 0x7f) return false;
  }
  return !(
    /[\s~^:?*[\\]/.test(name) ||
    name.includes("..") ||
    name.includes("@{") ||
    name.includes("//") ||
    name.startsWith("/") ||
    /(\/|\.|\.lock)$/.test(name)
  );
}

export function createProjectService(ctx: ServiceContext, namespaces: NamespaceService): ProjectService {
  const { knex } = ctx;

  async function withNamespace(row: ProjectRow | undefined): Promise<Project | undefined> {
    if (!row) return undefined;
    const ns = await namespaces.get(row.namespace_id);
    if (!ns) return undefined;
    return projectFromRow(row, ns);
  }

  async function get(id: number): Promise<Project | undefined> {
    return withNamespace((await knex("projects").where({ id }).first()) as ProjectRow | undefined);
  }

  async function getByFullPath(fullPath: string): Promise<Project | undefined> {
    const slash = fullPath.lastIndexOf("/");
    if (slash <= 0) return undefined;
    const ns = await namespaces.getByFullPath(fullPath.slice(0, slash));
    if (!ns) return undefined;
    const row = (await knex("projects").where({ namespace_id: ns.id, path: fullPath.slice(slash + 1) }).first()) as
      | ProjectRow
      | undefined;
    return row && projectFromRow(row, ns);
  }

  return {
    get,
    getByFullPath,
    async find(idOrPath) {
      if (typeof idOrPath === "number") return Number.isInteger(idOrPath) && idOrPath >= 1 && idOrPath <= MAX_DB_ID ? get(idOrPath) : undefined;
      if (/^[0-9]+$/.test(idOrPath)) {
        const id = Number(idOrPath);
        return id >= 1 && id <= MAX_DB_ID ? get(id) : undefined;
      }
      return getByFullPath(idOrPath);
    },
    async create(input, creatorId) {
      const rawName = input.name === undefined || input.name === null ? undefined : String(input.name);
      const rawPath = input.path === undefined || input.path === null ? undefined : String(input.path);
      if (!rawName && !rawPath) throw invalid("name or path is missing");
      const name = rawName ?? rawPath!;
      const path = rawPath ?? pathFromName(name);
      const fieldErrors: Record<string, string[]> = {};
      const nameProblems = projectNameErrors(name);
      if (nameProblems.length) fieldErrors.name = nameProblems;
      const pathProblems = pathErrors(path);
      if (pathProblems.length) fieldErrors.path = pathProblems;
      const defaultBranch = input.defaultBranch ?? "main";
      if (typeof defaultBranch !== "string" || !isValidBranchName(defaultBranch)) {
        fieldErrors.default_branch = ["is invalid"];
      }
      const description = optionalString(input.description, "description", 2000) ?? "";
      const visibility = parseVisibility(input.visibility, "private");
      if (Object.keys(fieldErrors).length) throw invalid("Project is invalid", fieldErrors);

      const namespace = await namespaces.get(input.namespaceId);
      if (!namespace) throw notFound("Namespace");

      return knex.transaction(async (trx) => {
        // Checked first to report GitLab's per-field messages; the unique indexes decide races.
        const taken: Record<string, string[]> = {};
        if (await trx("projects").where({ namespace_id: namespace.id, name }).first("id")) {
          taken.name = ["has already been taken"];
        }
        if (await trx("projects").where({ namespace_id: namespace.id, path }).first("id")) {
          taken.path = ["has already been taken"];
        }
        if (Object.keys(taken).length) throw invalid("Project is invalid", taken);

        const createdAt = toDbTime(ctx.now());
        let id: number;
        try {
          [{ id }] = (await trx("projects")
            .insert({
              name,
              path,
              namespace_id: namespace.id,
              description,
              default_branch: defaultBranch,
              visibility,
              creator_id: creatorId,
              created_at: createdAt,
            })
            .returning("id")) as { id: number }[];
        } catch (err) {
          if (isUniqueViolation(err)) throw invalid("Project is invalid", { path: ["has already been taken"] });
          throw err;
        }
        await protectDefaultBranch(trx, id, defaultBranch, ctx.now());
        if (creatorId !== null) {
          await trx("project_members").insert({
            project_id: id,
            user_id: creatorId,
            access_level: AccessLevel.OWNER,
            created_at: createdAt,
          });
        }
        return projectFromRow((await trx("projects").where({ id }).first()) as ProjectRow, namespace);
      });
    },
  };
}
