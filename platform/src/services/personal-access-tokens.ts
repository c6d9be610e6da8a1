import { digestToken, digestsEqual, generatePersonalAccessToken } from "@kasbridge/sdk/auth";
import { fromDbTime, fromDbTimeOrNull, isUniqueViolation, toDbTime } from "../store/db-util.js";
import type { ServiceContext } from "./context.js";
import { conflict, invalid, notFound } from "./errors.js";
import type { RevocationRecorder } from "./revocations.js";
import type { UsageThrottle } from "./usage-throttle.js";
import { userFromRow, type User } from "./users.js";
import { optionalString, requireString } from "./validation.js";

/** Scopes GitLab knows for personal access tokens. */
export const PERSONAL_ACCESS_TOKEN_SCOPES = [
  "api",
  "read_api",
  "read_user",
  "create_runner",
  "manage_runner",
  "k8s_proxy",
  "self_rotate",
  "read_repository",
  "write_repository",
  "read_registry",
  "write_registry",
  "read_virtual_registry",
  "write_virtual_registry",
  "sudo",
  "admin_mode",
  "read_service_ping",
  "ai_features",
] as const;

/** Shortest operator-supplied token we accept (generated ones are far longer). */
export const MIN_SUPPLIED_TOKEN_LENGTH = 20;

export interface PersonalAccessToken {
  id: number;
  userId: number;
  name: string;
  description: string;
  scopes: string[];
  /** "YYYY-MM-DD"; the token stops working at 00:00 UTC that day. Null: never expires. */
  expiresAt: string | null;
  revoked: boolean;
  /** Not revoked and not expired, at the time it was read. */
  active: boolean;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export interface CreatePersonalAccessTokenInput {
  name: string;
  scopes: string[];
  expiresAt?: string | null;
  description?: string;
}

export interface PersonalAccessTokenService {
  /**
   * Issues a token for the user. `options.secret` registers an operator-supplied value instead of
   * generating one (bootstrap admin token); it must be at least 20 characters without whitespace.
   */
  create(
    userId: number,
    input: CreatePersonalAccessTokenInput,
    options?: { secret?: string },
  ): Promise<{ token: PersonalAccessToken; secret: string }>;
  list(userId: number): Promise<PersonalAccessToken[]>;
  /** The token with this id, whoever owns it. */
  get(tokenId: number): Promise<PersonalAccessToken | undefined>;
  /**
   * Revokes the user's token; the revocation feed tells KAS, which ends the Kubernetes API proxy
   * streams it opened. Revoking a revoked token changes nothing. Throws not_found.
   */
  revoke(userId: number, tokenId: number): Promise<PersonalAccessToken>;
  /** True when a token with this plaintext exists (whatever its state). */
  exists(secret: string): Promise<boolean>;
  /**
   * Resolves a plaintext token to an active token and its active user; undefined when unknown,
   * revoked, expired or the user is blocked. Records the use (throttled).
   */
  authenticate(secret: string): Promise<{ token: PersonalAccessToken; user: User } | undefined>;
}

interface PatRow {
  id: number;
  user_id: number;
  name: string;
  description: string;
  scopes: string;
  token_digest: string;
  expires_at: string | null;
  revoked_at: unknown;
  last_used_at: unknown;
  created_at: unknown;
}

function isExpired(expiresAt: string | null, now: Date): boolean {
  return expiresAt !== null && now.getTime() >= Date.parse(`${expiresAt}T00:00:00Z`);
}

function patFromRow(row: PatRow, now: Date): PersonalAccessToken {
  const revoked = fromDbTimeOrNull(row.revoked_at) !== null;
  return {
    id: row.id,
    userId: row.user_id,
    name: row.name,
    description: row.description,
    scopes: JSON.parse(row.scopes) as string[],
    expiresAt: row.expires_at,
    revoked,
    active: !revoked && !isExpired(row.expires_at, now),
    createdAt: fromDbTime(row.created_at),
    lastUsedAt: fromDbTimeOrNull(row.last_used_at),
  };
}

const MAX_TOKEN_LENGTH = 1024;

export function createPersonalAccessTokenService(
  ctx: ServiceContext,
  deps: { throttle: UsageThrottle; revocations: RevocationRecorder },
): PersonalAccessTokenService {
  const { knex } = ctx;

  function parseScopes(scopes: unknown): string[] {
    if (!Array.isArray(scopes) || scopes.length === 0) throw invalid("scopes is missing");
    const unknown = scopes.filter((s) => !(PERSONAL_ACCESS_TOKEN_SCOPES as readonly unknown[]).includes(s));
    if (unknown.length > 0) throw invalid("scopes does not have a valid value");
    return [...new Set(scopes as string[])];
  }

  function parseExpiresAt(value: unknown, now: Date): string | null {
    if (value === undefined || value === null || value === "") return null;
    if (typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(`${value}T00:00:00Z`))) {
      throw invalid("expires_at is invalid");
    }
    if (new Date(`${value}T00:00:00Z`).toISOString().slice(0, 10) !== value) throw invalid("expires_at is invalid");
    if (isExpired(value, now)) throw invalid("Expiration date must be in the future");
    return value;
  }

  return {
    async create(userId, input, options = {}) {
      const name = requireString(input.name, "name", 255);
      const description = optionalString(input.description, "description", 255) ?? "";
      const scopes = parseScopes(input.scopes);
      const now = ctx.now();
      const expiresAt = parseExpiresAt(input.expiresAt, now);
      let secret: string;
      if (options.secret !== undefined) {
        secret = options.secret;
        if (secret.length < MIN_SUPPLIED_TOKEN_LENGTH || secret.length > MAX_TOKEN_LENGTH || /\s/.test(secret)) {
          throw invalid(`token must be ${MIN_SUPPLIED_TOKEN_LENGTH} to ${MAX_TOKEN_LENGTH} characters without whitespace`);
        }
      } else {
        secret = generatePersonalAccessToken();
      }
      if (!(await knex("users").where({ id: userId }).first("id"))) throw notFound("User");
      try {
        const [{ id }] = (await knex("personal_access_tokens")
          .insert({
            user_id: userId,
            name,
            description,
            scopes: JSON.stringify(scopes),
            token_digest: digestToken(secret),
            expires_at: expiresAt,
            created_at: toDbTime(now),
          })
          .returning("id")) as { id: number }[];
        const row = (await knex("personal_access_tokens").where({ id }).first()) as PatRow;
        return { token: patFromRow(row, now), secret };
      } catch (err) {
        // Only reachable with a supplied secret that is already registered.
        if (isUniqueViolation(err)) throw conflict("Token has already been registered");
        throw err;
      }
    },

    async list(userId) {
      const now = ctx.now();
      const rows = (await knex("personal_access_tokens").where({ user_id: userId }).orderBy("id")) as PatRow[];
      return rows.map((r) => patFromRow(r, now));
    },

    async get(tokenId) {
      const row = (await knex("personal_access_tokens").where({ id: tokenId }).first()) as PatRow | undefined;
      return row && patFromRow(row, ctx.now());
    },

    async revoke(userId, tokenId) {
      const now = ctx.now();
      const revoked = [{ kind: "personal_access_token", userId, tokenId } as const];
      const { row, changed } = await knex.transaction(async (trx) => {
        const n = await trx("personal_access_tokens")
          .where({ id: tokenId, user_id: userId })
          .whereNull("revoked_at")
          .update({ revoked_at: toDbTime(now) });
        if (n > 0) await deps.revocations.record(trx, revoked);
        return { row: (await trx("personal_access_tokens").where({ id: tokenId, user_id: userId }).first()) as PatRow | undefined, changed: n > 0 };
      });
      if (!row) throw notFound("Personal access token");
      if (changed) deps.revocations.publish(revoked);
      return patFromRow(row, now);
    },

    async exists(secret) {
      return Boolean(await knex("personal_access_tokens").where({ token_digest: digestToken(secret) }).first("id"));
    },

    async authenticate(secret) {
      if (typeof secret !== "string" || secret.length === 0 || secret.length > MAX_TOKEN_LENGTH) return undefined;
      const digest = digestToken(secret);
      const row = (await knex("personal_access_tokens").where({ token_digest: digest }).first()) as PatRow | undefined;
      if (!row || !digestsEqual(row.token_digest, digest)) return undefined;
      const now = ctx.now();
      const token = patFromRow(row, now);
      if (!token.active) return undefined;
      const userRow = await knex("users").where({ id: row.user_id }).first();
      if (!userRow) return undefined;
      const user = userFromRow(userRow);
      if (user.state !== "active") return undefined;
      if (deps.throttle.shouldWrite(token.id, now.getTime())) {
        const threshold = toDbTime(new Date(now.getTime() - deps.throttle.intervalMs));
        try {
          await knex("personal_access_tokens")
            .where({ id: token.id })
            .andWhere((q) => q.whereNull("last_used_at").orWhere("last_used_at", "<", threshold))
            .update({ last_used_at: toDbTime(now) });
        } catch (err) {
          ctx.logger.warn({ err, tokenId: token.id }, "cannot record personal access token use");
        }
      }
      return { token, user };
    },
  };
}
