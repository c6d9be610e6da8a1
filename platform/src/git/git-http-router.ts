import { basename, dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import express from "express";
import type { Request, Response, Router } from "express";
import pino from "pino";
import type { Logger } from "pino";
import { AccessLevel } from "../services/access-levels.js";
import type { PersonalAccessToken } from "../services/personal-access-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";
import {
  BodyTooLargeError,
  bodyTooLargeMessage,
  declaredLengthExceeds,
  drainRefusedBody,
  limitBody,
  type BodyLimit,
} from "../api/body-limit.js";
import { decidePush } from "./branch-protection.js";
import { runCgi } from "./cgi.js";
import { gitConfigEnvironment, gitExecPath } from "./git-command.js";
import { PushRequestError, peekPushCommands } from "./receive-pack-commands.js";
import type { PushSession } from "./repositories.js";
import { bearerToken } from "@kasbridge/sdk/auth";

export interface GitHttpRouterOptions {
  /** The platform services (projects, members, tokens, repositories). */
  services: PlatformServices;
  /** Default: silent. */
  logger?: Logger;
  /**
   * When a client disconnects mid-push, how long receive-pack gets to exit by itself once its input
   * is closed (it then removes its quarantined objects) before SIGTERM; then as long again before
   * SIGKILL. Fetches are stopped with SIGTERM at once. Default 5000 ms.
   */
  killGraceMs?: number;
  /**
   * Largest body of a git request, counted after gzip decoding: a push's pack, a fetch's
   * negotiation. A larger one is refused with 413 before git writes anything. Default 100 MiB.
   */
  maxBodyBytes?: number;
  /** How 413 answers name the setting behind maxBodyBytes. Default "GitHttpRouterOptions.maxBodyBytes". */
  maxBodySetting?: string;
}

/** Default GitHttpRouterOptions.maxBodyBytes. */
export const DEFAULT_GIT_MAX_BODY_BYTES = 100 * 1024 * 1024;
/** Longest command list of a push read before git runs (about 40 000 ref updates). */
export const MAX_PUSH_COMMANDS_BYTES = 4 * 1024 * 1024;

/** Token scopes that may fetch (GitLab: download_code). */
export const GIT_READ_SCOPES: readonly string[] = ["api", "read_api", "read_repository", "write_repository"];
/** Token scopes that may push (GitLab: push_code). */
export const GIT_WRITE_SCOPES: readonly string[] = ["api", "write_repository"];
/** Minimum role to fetch a private project's repository (GitLab: Reporter). */
export const GIT_DOWNLOAD_ACCESS_LEVEL = AccessLevel.REPORTER;
/** Minimum role to push (GitLab: Developer); protected branches ask for more (see branch-protection.ts). */
export const GIT_PUSH_ACCESS_LEVEL = AccessLevel.DEVELOPER;

// GitLab's wording, so git prints familiar "remote:" lines.
const MESSAGES = {
  unauthorized:
    "HTTP Basic: Access denied. If a password was provided for Git authentication, the password was incorrect " +
    "or you're required to use a token instead of a password. If a token was provided, it was either incorrect, " +
    "expired, or improperly scoped.",
  notFound: "The project you were looking for could not be found or you don't have permission to view it.",
  downloadDenied: "You are not allowed to download code from this project.",
  pushDenied: "You are not allowed to push code to this project.",
  downloadScope: "You are not allowed to download code.",
  pushScope: "You are not allowed to upload code.",
  dumb: "Only the smart HTTP protocol is supported (git >= 1.6.6).",
};

type GitService = "upload-pack" | "receive-pack";

/** Settings for every http-backend run; the router has already authorized the request. */
const HTTP_BACKEND_CONFIG = gitConfigEnvironment({
  "http.uploadpack": "true",
  "http.receivepack": "true",
  "http.getanyfile": "false",
  "receive.fsckObjects": "true",
  "uploadpack.allowFilter": "true",
});

const GIT_PATH_RE = /^\/(.+)\.git\/(info\/refs|git-upload-pack|git-receive-pack)$/;

/**
 * Git smart HTTP for every project: `/<full path>.git/info/refs?service=…`, `…/git-upload-pack`
 * and `…/git-receive-pack`, served by git's own `git http-backend` (CGI, streamed both ways).
 * `/<full path>/info/refs` redirects to the `.git` URL, as GitLab does.
 *
 * Authentication is HTTP Basic with a personal access token as the password (any username) or
 * `Authorization: Bearer <token>`; anonymous requests may fetch public projects. Otherwise 401
 * with `WWW-Authenticate: Basic realm="GitLab"`, so git asks for credentials. Authorization
 * follows GitLab: fetch needs Reporter on a private project (anyone signed in for internal ones),
 * push needs Developer; a project the user cannot see is 404, a visible one they may not
 * fetch from or push to is 403. Admins may do anything. Pushes to protected branches are checked
 * ref by ref (decidePush, enforced by the repository's pre-receive hook); bodies larger than
 * `maxBodyBytes` are refused with 413 and leave the repository unchanged.
 *
 * Mount it at the root of the platform's express app (before any catch-all); it passes every
 * other request on, and everything when `services.repositories` is disabled.
 */
export function createGitHttpRouter(options: GitHttpRouterOptions): Router {
  const { services } = options;
  const logger = options.logger ?? pino({ level: "silent" });
  const repositories = services.repositories;
  const bodyLimit: BodyLimit = {
    maxBytes: options.maxBodyBytes ?? DEFAULT_GIT_MAX_BODY_BYTES,
    setting: options.maxBodySetting ?? "GitHttpRouterOptions.maxBodyBytes",
  };
  const router = express.Router();

  function deny(res: Response, status: 401 | 403 | 404, message: string): void {
    if (status === 401) res.set("WWW-Authenticate", 'Basic realm="GitLab"');
    res.status(status).type("text/plain").send(`${message}\n`);
  }

  /** Refuses a request body: git never sees (the rest of) it, the client gets the answer. */
  function refuseBody(req: Request, res: Response, status: 400 | 413 | 415, message: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(status).type("text/plain").send(`${message}\n`);
    drainRefusedBody(req);
  }

  function refuseInput(req: Request, res: Response, err: unknown, service: GitService): void {
    if (err instanceof BodyTooLargeError) {
      const what = service === "receive-pack" ? "the push" : "the request body";
      refuseBody(req, res, 413, `Request Entity Too Large: ${bodyTooLargeMessage(err.limit, what)}`);
    } else if (err instanceof PushRequestError) {
      refuseBody(req, res, 400, `Bad Request: ${err.message}`);
    } else if ((err as { code?: unknown }).code !== undefined && String((err as { code: unknown }).code).startsWith("Z_")) {
      refuseBody(req, res, 400, "Bad Request: the request body is not valid gzip");
    } else {
      res.destroy(); // the client went away
    }
  }

  router.use(async (req, res, next) => {
    if (!repositories.enabled) {
      next(); // started without a repositories directory: no git here
      return;
    }
    const m = GIT_PATH_RE.exec(req.path);
    if (!m) {
      redirectWithoutSuffix(req, res, next);
      return;
    }
    let fullPath: string;
    try {
      fullPath = decodeURIComponent(m[1]!);
    } catch {
      next();
      return;
    }
    const endpoint = m[2]!;
    const isAdvertisement = endpoint === "info/refs";
    if (isAdvertisement ? req.method !== "GET" && req.method !== "HEAD" : req.method !== "POST") {
      res.status(405).set("Allow", isAdvertisement ? "GET, HEAD" : "POST").type("text/plain").send("Method Not Allowed\n");
      return;
    }
    const query = new URL(req.originalUrl, "http://x").search.slice(1);
    let service: GitService;
    if (isAdvertisement) {
      const requested = new URLSearchParams(query).get("service");
      if (requested !== "git-upload-pack" && requested !== "git-receive-pack") {
        deny(res, 403, MESSAGES.dumb);
        return;
      }
      service = requested === "git-upload-pack" ? "upload-pack" : "receive-pack";
    } else {
      service = endpoint === "git-upload-pack" ? "upload-pack" : "receive-pack";
    }
    const started = Date.now();
    const log = logger.child({ project: fullPath, service, endpoint });

    try {
      // ---- authentication ----
      const credential = credentialFrom(req);
      let auth: { user: User; token: PersonalAccessToken } | undefined;
      if (credential !== undefined) {
        auth = await services.personalAccessTokens.authenticate(credential);
        if (!auth) {
          log.debug("git request with an invalid token");
          deny(res, 401, MESSAGES.unauthorized);
          return;
        }
      }
      const user = auth?.user;

      // ---- authorization ----
      const project = await services.projects.getByFullPath(fullPath);
      if (!project || !(await services.members.canReadProject(user, project))) {
        // Anonymous: ask for credentials, as GitLab does; signed in: hide the project.
        if (user) deny(res, 404, MESSAGES.notFound);
        else deny(res, 401, MESSAGES.unauthorized);
        return;
      }
      const access = user ? (user.admin ? AccessLevel.OWNER : await services.members.projectAccessLevel(user.id, project)) : AccessLevel.NO_ACCESS;
      if (service === "upload-pack") {
        if (auth && !auth.token.scopes.some((s) => GIT_READ_SCOPES.includes(s))) {
          deny(res, 403, MESSAGES.downloadScope);
          return;
        }
        if (!canDownload(project, user, access)) {
          if (user) deny(res, 403, MESSAGES.downloadDenied);
          else deny(res, 401, MESSAGES.unauthorized);
          return;
        }
      } else {
        if (!auth) {
          deny(res, 401, MESSAGES.unauthorized);
          return;
        }
        if (!auth.token.scopes.some((s) => GIT_WRITE_SCOPES.includes(s))) {
          deny(res, 403, MESSAGES.pushScope);
          return;
        }
        if (access < GIT_PUSH_ACCESS_LEVEL) {
          deny(res, 403, MESSAGES.pushDenied);
          return;
        }
      }

      // ---- the request body: gzip decoded here, limited ----
      let body: RequestBody | undefined;
      if (!isAdvertisement) {
        if (declaredLengthExceeds(req.get("content-length"), bodyLimit)) {
          refuseInput(req, res, new BodyTooLargeError(bodyLimit), service);
          return;
        }
        const opened = openRequestBody(req, bodyLimit, log);
        if (typeof opened === "string") {
          refuseBody(req, res, 415, `Unsupported Media Type: Content-Encoding ${opened.slice(0, 40)}`);
          return;
        }
        body = opened;
      }
      const stdin = body?.stream;

      // ---- branch protection: decided from the pushed commands, before git runs ----
      const repoDir = await repositories.ensureRepository(project.id);
      let session: PushSession | undefined;
      if (service === "receive-pack" && stdin) {
        let commands;
        try {
          commands = await peekPushCommands(stdin, MAX_PUSH_COMMANDS_BYTES);
        } catch (err) {
          log.debug({ err }, "push request refused before git ran");
          refuseInput(req, res, err, service);
          return;
        }
        const decisions = decidePush({
          commands,
          rules: await services.protectedBranches.list(project.id),
          access,
          isAdmin: user?.admin ?? false,
          defaultBranch: project.defaultBranch,
          projectPath: project.pathWithNamespace,
          emptyRepository: !(await repositories.hasBranches(project.id)),
        });
        const denied = decisions.filter((d) => d.action === "deny").map((d) => d.ref);
        if (denied.length > 0) log.info({ userId: user?.id, refs: denied }, "push refused by branch protection");
        session = await repositories.beginPush(project.id, decisions);
      }

      // ---- git http-backend ----
      const env: Record<string, string> = repositories.gitEnvironment({
        ...HTTP_BACKEND_CONFIG,
        GIT_PROJECT_ROOT: dirname(repoDir),
        GIT_HTTP_EXPORT_ALL: "1",
        PATH_INFO: `/${basename(repoDir)}/${endpoint}`,
        REQUEST_METHOD: req.method,
        QUERY_STRING: query,
        CONTENT_TYPE: req.get("content-type") ?? "",
        REMOTE_USER: user?.username ?? "",
        REMOTE_ADDR: req.socket.remoteAddress ?? "",
        ...session?.env,
      });
      const contentLength = req.get("content-length");
      const decoded = body?.decoded ?? false;
      if (!decoded && contentLength !== undefined && /^\d+$/.test(contentLength)) env.CONTENT_LENGTH = contentLength;
      else if (decoded || req.get("transfer-encoding")) env.HTTP_TRANSFER_ENCODING = "chunked"; // read to EOF
      const protocol = req.get("git-protocol");
      if (protocol && /^[\x20-\x7e]{1,256}$/.test(protocol)) env.HTTP_GIT_PROTOCOL = protocol;

      const result = await runCgi({
        command: join(await gitExecPath(repositories.gitBinary), "git-http-backend"),
        env,
        req,
        res,
        stdin,
        // A body found too large at its end is still answered with 413, not git's half answer.
        holdOutputUntilInputEnds: stdin !== undefined,
        logger: log,
        exitGraceMs: service === "receive-pack" ? (options.killGraceMs ?? 5000) : 0,
        killGraceMs: options.killGraceMs,
      });
      if (session) {
        // Before the response ends: when `git push` returns, listeners have seen the push.
        await session.finish().catch((err: unknown) => log.error({ err }, "cannot process a push"));
      }
      if (result.inputError) {
        log.info({ userId: user?.id, reason: result.inputError.message, exitCode: result.exitCode }, "git request body refused");
        refuseInput(req, res, result.inputError, service);
        return;
      }
      const level = result.exitCode === 0 ? "debug" : "warn";
      log[level](
        {
          userId: user?.id,
          status: res.statusCode,
          exitCode: result.exitCode,
          signal: result.signal,
          clientGone: result.clientGone,
          stderr: result.exitCode === 0 ? undefined : result.stderr.slice(0, 1000),
          durationMs: Date.now() - started,
        },
        "git http request",
      );
      if (!result.headersSent && !res.headersSent && !res.destroyed) {
        res.status(500).type("text/plain").send("git http-backend failed\n");
        return;
      }
      res.end();
    } catch (err) {
      log.error({ err }, "git http request failed");
      if (!res.headersSent) res.status(500).type("text/plain").send("Internal Server Error\n");
      else res.destroy();
    }
  });

  return router;
}

/** A git request's body as git gets it: gzip decoded (`decoded`), failing once over the limit. */
interface RequestBody {
  stream: Readable;
  decoded: boolean;
}

/**
 * The body of `req`, decoded and limited; the Content-Encoding's name when it is one we do not
 * decode. Every failure (over the limit, bad gzip, the client gone) ends up as an error of
 * `stream`, which always has a listener, so no failure is ever an uncaught one.
 */
function openRequestBody(req: Request, limit: BodyLimit, log: Logger): RequestBody | string {
  const encoding = (req.get("content-encoding") ?? "").trim().toLowerCase();
  let source: Readable = req;
  if (encoding === "gzip" || encoding === "x-gzip") source = req.pipe(createGunzip());
  else if (encoding !== "" && encoding !== "identity") return encoding;
  const limited = limitBody(limit);
  if (source !== req) source.on("error", (err) => limited.destroy(err));
  limited.on("error", (err) => log.debug({ err }, "git request body failed"));
  // A client gone mid-body must end whoever waits for the rest (pipe() would not tell them).
  const clientGone = () => {
    if (!req.complete) limited.destroy(new Error("the client closed the connection before the request body ended"));
  };
  if (req.destroyed) clientGone();
  else req.once("close", clientGone);
  return { stream: source.pipe(limited), decoded: source !== req };
}

/** `GET /<path>/info/refs?service=git-…` → `/<path>.git/info/refs?service=git-…`, as GitLab redirects. */
function redirectWithoutSuffix(req: Request, res: Response, next: () => void): void {
  // Project path characters only: never "//host" (an open redirect) or anything to escape.
  const m = req.method === "GET" ? /^\/([A-Za-z0-9_][A-Za-z0-9_.\-/]*)\/info\/refs$/.exec(req.path) : null;
  const service = new URL(req.originalUrl, "http://x").searchParams.get("service");
  if (!m || m[1]!.includes("//") || m[1]!.startsWith("api/") || (service !== "git-upload-pack" && service !== "git-receive-pack")) {
    next();
    return;
  }
  res.redirect(301, `/${m[1]}.git/info/refs?service=${service}`);
}

/** GitLab's download_code: anyone for public projects, anyone signed in for internal ones, else Reporter. */
function canDownload(project: Project, user: User | undefined, access: number): boolean {
  if (project.visibility === "public") return true;
  if (!user) return false;
  return project.visibility === "internal" || access >= GIT_DOWNLOAD_ACCESS_LEVEL;
}

/**
 * The token of `Authorization: Basic <user:token>` (username ignored) or `Bearer <token>`;
 * undefined without an Authorization header, "" for one that carries nothing usable.
 */
export function credentialFrom(req: Request): string | undefined {
  const header = req.get("authorization");
  if (!header) return undefined;
  const basic = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    return colon < 0 ? "" : decoded.slice(colon + 1);
  }
  return bearerToken(header) ?? "";
}
