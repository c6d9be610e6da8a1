import type { Knex } from "knex";
import { fromDbBool, fromDbInt, fromDbTime, isUniqueViolation, toDbTime } from "../store/db-util.js";
import { inTransaction, type ServiceContext } from "./context.js";
import type { RevocationRecorder } from "./revocations.js";
import { conflict, invalid } from "./errors.js";
import { optionalString, requireString, usernameErrors } from "./validation.js";

export interface User {
  id: number;
  username: string;
  name: string;
  email: string | null;
  admin: boolean;
  /** "active" or "blocked"; blocked users cannot authenticate. */
  state: string;
  createdAt: Date;
}

export interface CreateUserInput {
  username: string;
  name: string;
  email?: string;
  admin?: boolean;
}

export interface UserService {
  /** Creates a user together with the personal namespace (path = username) that owns its projects. */
  create(input: CreateUserInput): Promise<User>;
  get(id: number): Promise<User | undefined>;
  getByUsername(username: string): Promise<User | undefined>;
  count(): Promise<number>;
  /**
   * Blocks an active user (GitLab's `POST /users/:id/block`): none of their personal access
   * tokens or CI job tokens work any more, and the revocation feed tells KAS, which ends the
   * Kubernetes API proxy streams they opened. Undefined when there is no such user; `changed` is
   * false when the user was already blocked.
   */
  block(id: number): Promise<{ user: User; changed: boolean } | undefined>;
  /** Makes a blocked user active again (their tokens work again unless revoked or expired). */
  unblock(id: number): Promise<{ user: User; changed: boolean } | undefined>;
}

interface UserRow {
  id: number;
  username: string;
  name: string;
  email: string | null;
  admin: unknown;
  state: string;
  created_at: unknown;
}

export function userFromRow(row: UserRow): User {
  return {
    id: row.id,
    username: row.username,
    name: row.name,
    email: row.email,
    admin: fromDbBool(row.admin),
    state: row.state,
    createdAt: fromDbTime(row.created_at),
  };
}

export function createUserService(ctx: ServiceContext, deps: { revocations: RevocationRecorder }): UserService {
  const { knex } = ctx;

  /** Moves the user from state `from` to `to`; records `revoked` in the same transaction when it changed. */
  async function transition(id: number, from: string, to: string, revoked: Parameters<RevocationRecorder["record"]>[1]) {
    const result = await knex.transaction(async (trx) => {
      const changed = await trx("users").where({ id, state: from }).update({ state: to });
      if (changed > 0 && revoked.length > 0) await deps.revocations.record(trx, revoked);
      const row = (await trx("users").where({ id }).first()) as UserRow | undefined;
      return row && { user: userFromRow(row), changed: changed > 0 };
    });
    if (result?.changed) {
      deps.revocations.publish(revoked);
      ctx.logger.info({ userId: id, state: to }, to === "blocked" ? "user blocked; their tokens stop working" : "user unblocked");
    }
    return result;
  }

  async function create(input: CreateUserInput, db: Knex | Knex.Transaction = knex): Promise<User> {
    const username = requireString(input.username, "username");
    const name = requireString(input.name, "name");
    const email = optionalString(input.email, "email", 255);
    if (email !== undefined && !/^[^\s@]+@[^\s@]+$/.test(email)) throw invalid("email is invalid");
    const usernameProblems = usernameErrors(username);
    if (usernameProblems.length > 0) throw invalid(usernameProblems.join(", "), { username: usernameProblems });

    return inTransaction(db, async (trx) => {
      // Checked up front for GitLab's specific 409 messages; the unique indexes still decide races.
      if (await trx("users").whereRaw("lower(username) = ?", [username.toLowerCase()]).first("id")) {
        throw conflict("Username has already been taken");
      }
      if (email !== undefined && (await trx("users").whereRaw("lower(email) = ?", [email.toLowerCase()]).first("id"))) {
        throw conflict("Email has already been taken");
      }
      // A group may already use this top-level path (users and groups share the path space).
      if (await trx("namespaces").where({ full_path: username }).first("id")) {
        throw conflict("Username has already been taken");
      }
      const createdAt = toDbTime(ctx.now());
      try {
        const [{ id }] = (await trx("users")
          .insert({ username, name, email: email ?? null, admin: input.admin === true, state: "active", created_at: createdAt })
          .returning("id")) as { id: number }[];
        await trx("namespaces").insert({
          name,
          path: username,
          kind: "user",
          parent_id: null,
          full_path: username,
          full_name: name,
          owner_id: id,
          visibility: "public",
          description: "",
          created_at: createdAt,
        });
        const row = (await trx("users").where({ id }).first()) as UserRow;
        return userFromRow(row);
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict("Username has already been taken");
        throw err;
      }
    });
  }

  return {
    create: (input) => create(input),
    async get(id) {
      const row = (await knex("users").where({ id }).first()) as UserRow | undefined;
      return row && userFromRow(row);
    },
    async getByUsername(username) {
      const row = (await knex("users").where({ username }).first()) as UserRow | undefined;
      return row && userFromRow(row);
    },
    async count() {
      const row = (await knex("users").count({ n: "*" }).first()) as { n: unknown } | undefined;
      return fromDbInt(row?.n ?? 0);
    },
    block: (id) => transition(id, "active", "blocked", [{ kind: "user", userId: id }]),
    unblock: (id) => transition(id, "blocked", "active", []),
  };
}
