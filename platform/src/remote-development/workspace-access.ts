/**
 * Who may reach a workspace through KAS's workspace proxy (`https://<port>-<workspace>.<dns_zone>`),
 * and where it runs: the platform's half of "reaching a workspace" (GitLab needs a separate proxy
 * with its own OAuth application; kasbridge answers KAS directly).
 *
 * Only the workspace's owner, only ports the devfile exposes publicly. Three credentials:
 * - a personal access token with the `api` scope (API clients: `Authorization: Bearer`, `PRIVATE-TOKEN`);
 * - a callback token: a JWT of 60 s the platform issues to a logged-in owner's browser
 *   (`issueCallbackToken`), bound to one workspace host, usable once; KAS exchanges it for
 * - a session token: a JWT bound to the same host, which KAS keeps in an HttpOnly cookie.
 * Both JWTs carry the personal access token that logged the browser in: when it is revoked or
 * expires, or the user is blocked, the session ends with it.
 */
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import type { PersonalAccessToken, PersonalAccessTokenService } from "../services/personal-access-tokens.js";
import type { User, UserService } from "../services/users.js";
import { hostName, parseWorkspaceHost } from "@kasbridge/sdk/modules/workspaces_proxy/server";
import { workspaceEndpoints, type Workspace, type WorkspaceService } from "./workspaces.js";

/** The PAT scope that reaches a workspace (GitLab's workspaces proxy asks its OAuth users for `api`). */
export const WORKSPACE_ACCESS_SCOPE = "api";
/** Lifetime of the token in the browser's redirect to the workspace host. */
export const CALLBACK_TOKEN_TTL_MS = 60_000;
/** Default lifetime of a browser session on one workspace host (the cookie). */
export const DEFAULT_SESSION_TTL_MS = 8 * 3_600_000;

const ISSUER = "kasbridge-platform";
const CALLBACK_AUDIENCE = "kasbridge-workspace-callback";
const SESSION_AUDIENCE = "kasbridge-workspace-session";

export const WORKSPACE_ACCESS_TYPES = ["personal_access_token", "workspace_callback", "workspace_session"] as const;
export type WorkspaceAccessType = (typeof WORKSPACE_ACCESS_TYPES)[number];

export interface WorkspaceAccessGrant {
  workspace: Workspace;
  user: User;
  port: number;
  /** The personal access token behind the credential (for a session: the one that logged the browser in). */
  token: PersonalAccessToken;
  /** With a callback token only: the session token KAS keeps in its cookie, and its expiry. */
  session?: { token: string; expiresAt: Date };
}

export type WorkspaceAccessResult =
  | { ok: true; grant: WorkspaceAccessGrant }
  | { ok: false; status: 401 | 403 | 404; message: string };

export interface WorkspaceAccessService {
  /** KAS's question: may this credential reach `host`, and where is it? */
  authorize(input: { host: string; accessType: WorkspaceAccessType; accessKey: string }): Promise<WorkspaceAccessResult>;
  /**
   * The browser step: the owner, logged in with `token`, gets a token for `host` to hand to the
   * proxy's callback. Refused like `authorize` for hosts the user may not reach.
   */
  issueCallbackToken(user: User, token: PersonalAccessToken, host: string): Promise<{ ok: true; token: string } | { ok: false; status: 403 | 404; message: string }>;
}

export interface WorkspaceAccessDeps {
  workspaces: WorkspaceService;
  users: UserService;
  personalAccessTokens: PersonalAccessTokenService;
  /** Key material for the tokens' HMAC key (derived, never used as is). Default: random per process. */
  secret?: Uint8Array;
  sessionTtlMs?: number;
  now?: () => Date;
}

const NOT_FOUND = { ok: false as const, status: 404 as const, message: "404 Workspace Not Found" };

export function createWorkspaceAccessService(deps: WorkspaceAccessDeps): WorkspaceAccessService {
  // Its own key: a workspace token can never pass for a KAS API JWT signed with the same secret.
  const key = createHmac("sha256", deps.secret ?? randomBytes(32)).update("kasbridge workspace access tokens").digest();
  const now = deps.now ?? (() => new Date());
  const sessionTtlMs = deps.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
  /** Callback tokens already exchanged, by jti, until they expire: each works once. */
  const usedCallbacks = new Map<string, number>();

  /** The owner's workspace of `host` with the port exposed publicly; a refusal otherwise. */
  async function reachable(user: User, host: string): Promise<{ ok: true; workspace: Workspace; port: number } | typeof NOT_FOUND> {
    const parsed = parseWorkspaceHost(host);
    if (!parsed) return NOT_FOUND;
    const workspace = await deps.workspaces.findByName(parsed.workspaceName);
    // Someone else's workspace is not found: its existence is not the caller's business.
    if (!workspace || workspace.dnsZone !== parsed.dnsZone || workspace.userId !== user.id) return NOT_FOUND;
    // The devfile's public endpoints and those the platform adds (the editor's).
    const exposed = workspaceEndpoints(workspace).some((e) => e.targetPort === parsed.port);
    if (!exposed) return { ok: false, status: 404, message: `404 Port ${parsed.port} is not a public endpoint of the workspace` };
    return { ok: true, workspace, port: parsed.port };
  }

  async function sign(audience: string, claims: { host: string; userId: number; tokenId: number }, ttlMs: number): Promise<{ token: string; expiresAt: Date }> {
    const nowS = Math.floor(now().getTime() / 1000);
    const expS = nowS + Math.ceil(ttlMs / 1000);
    const token = await new SignJWT({ host: claims.host, pat: claims.tokenId })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuer(ISSUER)
      .setAudience(audience)
      .setSubject(String(claims.userId))
      .setJti(randomUUID())
      .setIssuedAt(nowS)
      .setExpirationTime(expS)
      .sign(key);
    return { token, expiresAt: new Date(expS * 1000) };
  }

  /** The user and token a workspace JWT names, when it is valid for `host` and both still are. */
  async function verify(jwt: string, audience: string, host: string): Promise<{ user: User; token: PersonalAccessToken; jti: string; exp: number } | undefined> {
    let payload;
    try {
      ({ payload } = await jwtVerify(jwt, key, { issuer: ISSUER, audience, algorithms: ["HS256"], currentDate: now() }));
    } catch (err) {
      if (err instanceof joseErrors.JOSEError) return undefined;
      throw err;
    }
    // Bound to one host: a cookie of one workspace port is no use on another.
    if (typeof payload.host !== "string" || payload.host !== hostName(host)) return undefined;
    if (typeof payload.pat !== "number" || typeof payload.jti !== "string" || typeof payload.exp !== "number") return undefined;
    const token = await deps.personalAccessTokens.get(payload.pat);
    if (!token?.active || String(token.userId) !== payload.sub) return undefined;
    const user = await deps.users.get(token.userId);
    if (!user || user.state !== "active") return undefined;
    return { user, token, jti: payload.jti, exp: payload.exp };
  }

  function forgetExpiredCallbacks(): void {
    const nowS = now().getTime() / 1000;
    for (const [jti, exp] of usedCallbacks) if (exp < nowS) usedCallbacks.delete(jti);
  }

  return {
    async authorize({ host, accessType, accessKey }) {
      let user: User;
      let token: PersonalAccessToken;
      let session: WorkspaceAccessGrant["session"];
      if (accessType === "personal_access_token") {
        const found = await deps.personalAccessTokens.authenticate(accessKey);
        if (!found) return { ok: false, status: 401, message: "401 Unauthorized" };
        if (!found.token.scopes.includes(WORKSPACE_ACCESS_SCOPE)) return { ok: false, status: 403, message: "403 Forbidden - insufficient_scope" };
        ({ user, token } = found);
      } else {
        const audience = accessType === "workspace_callback" ? CALLBACK_AUDIENCE : SESSION_AUDIENCE;
        const verified = await verify(accessKey, audience, host);
        if (!verified) return { ok: false, status: 401, message: "401 Unauthorized" };
        ({ user, token } = verified);
        if (accessType === "workspace_callback") {
          forgetExpiredCallbacks();
          if (usedCallbacks.has(verified.jti)) return { ok: false, status: 401, message: "401 Unauthorized - the login link was used already" };
          usedCallbacks.set(verified.jti, verified.exp);
        }
      }
      const found = await reachable(user, host);
      if (!found.ok) return found;
      if (accessType === "workspace_callback") session = await sign(SESSION_AUDIENCE, { host: hostName(host), userId: user.id, tokenId: token.id }, sessionTtlMs);
      return { ok: true, grant: { workspace: found.workspace, user, port: found.port, token, ...(session ? { session } : {}) } };
    },

    async issueCallbackToken(user, token, host) {
      const found = await reachable(user, host);
      if (!found.ok) return found;
      const { token: jwt } = await sign(CALLBACK_AUDIENCE, { host: hostName(host), userId: user.id, tokenId: token.id }, CALLBACK_TOKEN_TTL_MS);
      return { ok: true, token: jwt };
    },
  };
}
