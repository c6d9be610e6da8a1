import { fromDbTime, isUniqueViolation, toDbTime } from "../store/db-util.js";
import { AccessLevel } from "./access-levels.js";
import type { ServiceContext } from "./context.js";
import { invalid, notFound } from "./errors.js";
import { optionalString, parseVisibility, pathErrors, requireString, type Visibility } from "./validation.js";

/** A personal namespace (kind "user") or a group (kind "group"), as GitLab's namespaces table. */
export interface Namespace {
  id: number;
  name: string;
  path: string;
  kind: "user" | "group";
  parentId: number | null;
  /** e.g. "parent/child"; unique across users and groups. */
  fullPath: string;
  /** e.g. "Parent / Child". */
  fullName: string;
  /** Owning user of a personal namespace; null for groups. */
  ownerId: number | null;
  visibility: Visibility;
  description: string;
  createdAt: Date;
}

export interface CreateGroupInput {
  name: string;
  path: string;
  parentId?: number | null;
  visibility?: Visibility;
  description?: string;
}

export interface NamespaceService {
  get(id: number): Promise<Namespace | undefined>;
  getByFullPath(fullPath: string): Promise<Namespace | undefined>;
  personalNamespaceOf(userId: number): Promise<Namespace | undefined>;
  /**
   * Creates a group, nested under `parentId` when given; `creatorId` (if any) becomes its owner.
   * Authorization is the caller's job.
   */
  createGroup(input: CreateGroupInput, creatorId: number | null): Promise<Namespace>;
  /** Ids of the namespace and all its ancestors, nearest first. */
  selfAndAncestorIds(namespace: Namespace): Promise<number[]>;
}

interface NamespaceRow {
  id: number;
  name: string;
  path: string;
  kind: string;
  parent_id: number | null;
  full_path: string;
  full_name: string;
  owner_id: number | null;
  visibility: string;
  description: string;
  created_at: unknown;
}

export function namespaceFromRow(row: NamespaceRow): Namespace {
  return {
    id: row.id,
    name: row.name,
    path: row.path,
    kind: row.kind === "user" ? "user" : "group",
    parentId: row.parent_id,
    fullPath: row.full_path,
    fullName: row.full_name,
    ownerId: row.owner_id,
    visibility: parseVisibility(row.visibility, "private"),
    description: row.description,
    createdAt: fromDbTime(row.created_at),
  };
}

/** Nesting limit, as GitLab's (20 levels of subgroups). */
const MAX_GROUP_DEPTH = 20;

export function createNamespaceService(ctx: ServiceContext): NamespaceService {
  const { knex } = ctx;

  async function get(id: number): Promise<Namespace | undefined> {
    const row = (await knex("namespaces").where({ id }).first()) as NamespaceRow | undefined;
    return row && namespaceFromRow(row);
  }

  async function selfAndAncestorIds(namespace: Namespace): Promise<number[]> {
    const ids = [namespace.id];
    let parentId = namespace.parentId;
    // Walks up one row at a time: depth is capped at 20 and full paths are denormalised, so this
    // runs only for permission checks on nested groups.
    while (parentId !== null && ids.length <= MAX_GROUP_DEPTH + 1) {
      ids.push(parentId);
      const row = (await knex("namespaces").where({ id: parentId }).first("parent_id")) as
        | { parent_id: number | null }
        | undefined;
      parentId = row?.parent_id ?? null;
    }
    return ids;
  }

  return {
    get,
    async getByFullPath(fullPath) {
      const row = (await knex("namespaces").where({ full_path: fullPath }).first()) as NamespaceRow | undefined;
      return row && namespaceFromRow(row);
    },
    async personalNamespaceOf(userId) {
      const row = (await knex("namespaces").where({ owner_id: userId, kind: "user" }).first()) as NamespaceRow | undefined;
      return row && namespaceFromRow(row);
    },
    selfAndAncestorIds,
    async createGroup(input, creatorId) {
      const name = requireString(input.name, "name");
      const path = requireString(input.path, "path");
      const description = optionalString(input.description, "description", 2000) ?? "";
      const problems = pathErrors(path);
      if (problems.length > 0) throw invalid(`Failed to save group {:path=>${JSON.stringify(problems)}}`, { path: problems });

      let parent: Namespace | undefined;
      if (input.parentId !== undefined && input.parentId !== null) {
        parent = await get(input.parentId);
        if (!parent || parent.kind !== "group") throw notFound("Parent group");
        if ((await selfAndAncestorIds(parent)).length >= MAX_GROUP_DEPTH) {
          throw invalid("Failed to save group {:parent=>[\"has too deep level of nesting\"]}");
        }
      }
      // GitLab: a subgroup cannot be more visible than its parent.
      const visibility = parseVisibility(input.visibility, parent?.visibility ?? "private");
      if (parent && rank(visibility) > rank(parent.visibility)) {
        throw invalid(`Failed to save group {:visibility_level=>["${visibility} is not allowed since the parent group has a ${parent.visibility} visibility."]}`);
      }
      const fullPath = parent ? `${parent.fullPath}/${path}` : path;
      const fullName = parent ? `${parent.fullName} / ${name}` : name;

      return knex.transaction(async (trx) => {
        if (await trx("namespaces").where({ full_path: fullPath }).first("id")) {
          throw invalid('Failed to save group {:path=>["has already been taken"]}', { path: ["has already been taken"] });
        }
        const createdAt = toDbTime(ctx.now());
        let id: number;
        try {
          [{ id }] = (await trx("namespaces")
            .insert({
              name,
              path,
              kind: "group",
              parent_id: parent?.id ?? null,
              full_path: fullPath,
              full_name: fullName,
              owner_id: null,
              visibility,
              description,
              created_at: createdAt,
            })
            .returning("id")) as { id: number }[];
        } catch (err) {
          if (isUniqueViolation(err)) {
            throw invalid('Failed to save group {:path=>["has already been taken"]}', { path: ["has already been taken"] });
          }
          throw err;
        }
        if (creatorId !== null) {
          await trx("namespace_members").insert({
            namespace_id: id,
            user_id: creatorId,
            access_level: AccessLevel.OWNER,
            created_at: createdAt,
          });
        }
        return namespaceFromRow((await trx("namespaces").where({ id }).first()) as NamespaceRow);
      });
    },
  };
}

function rank(v: Visibility): number {
  return v === "private" ? 0 : v === "internal" ? 10 : 20;
}
