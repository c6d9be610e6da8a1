import { isUniqueViolation, toDbTime } from "../store/db-util.js";
import { AccessLevel, MEMBER_ACCESS_LEVELS } from "./access-levels.js";
import type { ServiceContext } from "./context.js";
import { conflict, invalid, notFound } from "./errors.js";
import type { Namespace, NamespaceService } from "./namespaces.js";
import type { Project } from "./projects.js";
import type { User } from "./users.js";

export interface Membership {
  userId: number;
  accessLevel: number;
  createdAt: Date;
}

export interface MemberService {
  addProjectMember(projectId: number, userId: number, accessLevel: number): Promise<Membership>;
  addGroupMember(namespaceId: number, userId: number, accessLevel: number): Promise<Membership>;
  /**
   * The user's effective access to a project: the highest of a direct project membership, a
   * membership in the project's group or any ancestor group, and OWNER of a personal namespace.
   * Admins are not special-cased here (see canReadProject and the REST layer).
   */
  projectAccessLevel(userId: number, project: Project): Promise<number>;
  /** Effective access to a group: the highest membership on it or any ancestor. */
  groupAccessLevel(userId: number, namespace: Namespace): Promise<number>;
  /** GitLab's visibility rules: public to all, internal to signed-in users, private to members. */
  canReadProject(user: User | undefined, project: Project): Promise<boolean>;
  canReadGroup(user: User | undefined, namespace: Namespace): Promise<boolean>;
}

function checkLevel(accessLevel: number): void {
  if (!MEMBER_ACCESS_LEVELS.includes(accessLevel)) throw invalid("access_level does not have a valid value");
}

export function createMemberService(ctx: ServiceContext, namespaces: NamespaceService): MemberService {
  const { knex } = ctx;

  async function add(table: string, key: string, sourceId: number, userId: number, accessLevel: number) {
    checkLevel(accessLevel);
    if (!(await knex("users").where({ id: userId }).first("id"))) throw notFound("User");
    const createdAt = ctx.now();
    try {
      await knex(table).insert({ [key]: sourceId, user_id: userId, access_level: accessLevel, created_at: toDbTime(createdAt) });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict("Member already exists");
      throw err;
    }
    return { userId, accessLevel, createdAt };
  }

  async function maxGroupLevel(userId: number, namespaceIds: number[]): Promise<number> {
    const row = (await knex("namespace_members")
      .where({ user_id: userId })
      .whereIn("namespace_id", namespaceIds)
      .max({ level: "access_level" })
      .first()) as { level: unknown } | undefined;
    return row?.level == null ? AccessLevel.NO_ACCESS : Number(row.level);
  }

  async function groupAccessLevel(userId: number, namespace: Namespace): Promise<number> {
    if (namespace.kind === "user") return namespace.ownerId === userId ? AccessLevel.OWNER : AccessLevel.NO_ACCESS;
    return maxGroupLevel(userId, await namespaces.selfAndAncestorIds(namespace));
  }

  async function projectAccessLevel(userId: number, project: Project): Promise<number> {
    const direct = (await knex("project_members").where({ project_id: project.id, user_id: userId }).first("access_level")) as
      | { access_level: number }
      | undefined;
    const inherited = await groupAccessLevel(userId, project.namespace);
    return Math.max(direct?.access_level ?? AccessLevel.NO_ACCESS, inherited);
  }

  return {
    async addProjectMember(projectId, userId, accessLevel) {
      if (!(await knex("projects").where({ id: projectId }).first("id"))) throw notFound("Project");
      return add("project_members", "project_id", projectId, userId, accessLevel);
    },
    async addGroupMember(namespaceId, userId, accessLevel) {
      const ns = await namespaces.get(namespaceId);
      if (!ns || ns.kind !== "group") throw notFound("Group");
      return add("namespace_members", "namespace_id", namespaceId, userId, accessLevel);
    },
    projectAccessLevel,
    groupAccessLevel,
    async canReadProject(user, project) {
      if (project.visibility === "public") return true;
      if (!user || user.state !== "active") return false;
      if (user.admin || project.visibility === "internal") return true;
      return (await projectAccessLevel(user.id, project)) >= AccessLevel.GUEST;
    },
    async canReadGroup(user, namespace) {
      if (namespace.visibility === "public") return true;
      if (!user || user.state !== "active") return false;
      if (user.admin || namespace.visibility === "internal") return true;
      return (await groupAccessLevel(user.id, namespace)) >= AccessLevel.GUEST;
    },
  };
}

