/**
 * Test harness (a *.test-support.ts file: no tests, not in the package): a platform HTTP server on an
 * ephemeral port with the REST API and the git smart HTTP router over a throwaway store and
 * repositories directory, plus a real `git` client isolated from the user's configuration.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import { afterEach, beforeEach } from "mocha";
import pino from "pino";
import { createPlatformApi } from "../api/rest-api.js";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { bootstrapAdmin } from "../bootstrap.js";
import { FakeConnections } from "../testing/http-fixtures.test-support.js";
import { createPlatformServices, type PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import type { Visibility } from "../services/validation.js";
import type { Store } from "../store/store.js";
import { useTestStore } from "../testing/fixtures.test-support.js";
import { createGitHttpRouter, type GitHttpRouterOptions } from "./git-http-router.js";
import type { PushEvent } from "./push-events.js";

export interface GitTestPlatform {
  baseUrl: string;
  /** host:port, for URLs with credentials. */
  host: string;
  port: number;
  services: PlatformServices;
  adminToken: string;
  repositoriesDir: string;
  /** Every PushEvent, in delivery order. */
  events: PushEvent[];
  /** Creates a user with a personal access token. */
  user(username: string, scopes?: string[]): Promise<{ id: number; token: string }>;
  /** Creates `group/<path>` (group created on first use) owned by `ownerId` (default: root). */
  project(path: string, options?: { visibility?: Visibility; defaultBranch?: string; group?: string }): Promise<Project>;
  addMember(project: Project, userId: number, level: number): Promise<void>;
  /** `http://<user>:<token>@host/<full path>.git`, or without credentials when `token` is undefined. */
  url(project: Project, token?: string): string;
  close(): Promise<void>;
}

export async function startGitPlatform(store: Store, routerOptions: Partial<GitHttpRouterOptions> = {}): Promise<GitTestPlatform> {
  const repositoriesDir = await mkdtemp(join(tmpdir(), "kasbridge-repos-"));
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const services = createPlatformServices({ store, repositoriesDir, logger, encryptionKey: randomBytes(32) });
  const adminToken = "glpat-" + randomBytes(20).toString("hex");
  await bootstrapAdmin(store, { dataDir: "/nonexistent-not-written", adminToken, services });
  const events: PushEvent[] = [];
  const unsubscribe = services.repositories.onPush((e) => events.push(e));

  const app = express();
  app.use(createPlatformApi({ services, connections: new FakeConnections(), externalUrl: "https://platform.test" }));
  app.use(createGitHttpRouter({ services, logger, killGraceMs: 1000, ...routerOptions }));
  app.use((_req, res) => {
    res.status(404).json({ message: "404 Not Found" });
  });
  const server = http.createServer(app);
  const port = await listen(server);
  const host = `127.0.0.1:${port}`;
  const groups = new Map<string, number>();
  const root = await services.users.getByUsername("root");

  return {
    baseUrl: `http://${host}`,
    host,
    port,
    services,
    adminToken,
    repositoriesDir,
    events,
    async user(username, scopes = ["api"]) {
      const user = await services.users.create({ username, name: username, email: `${username}@example.com` });
      const { secret } = await services.personalAccessTokens.create(user.id, { name: "git", scopes });
      return { id: user.id, token: secret };
    },
    async project(path, projectOptions = {}) {
      const groupPath = projectOptions.group ?? "group";
      let groupId = groups.get(groupPath);
      if (groupId === undefined) {
        const group = await services.namespaces.createGroup({ name: groupPath, path: groupPath, visibility: "public" }, root?.id ?? null);
        groupId = group.id;
        groups.set(groupPath, groupId);
      }
      return services.projects.create(
        { path, namespaceId: groupId, visibility: projectOptions.visibility ?? "private", defaultBranch: projectOptions.defaultBranch },
        null,
      );
    },
    async addMember(project, userId, level) {
      await services.members.addProjectMember(project.id, userId, level);
    },
    url(project, token) {
      const auth = token === undefined ? "" : `user:${encodeURIComponent(token)}@`;
      return `http://${auth}${host}/${project.pathWithNamespace}.git`;
    },
    async close() {
      unsubscribe();
      server.closeAllConnections();
      await closeServer(server);
      await rm(repositoriesDir, { recursive: true, force: true });
    },
  };
}

/**
 * Registers hooks in the current describe block: a fresh git platform over an SQLite store for
 * each test (`platform`), and git clients (`client()`) disposed after it.
 */
export function useGitPlatform(routerOptions: Partial<GitHttpRouterOptions> = {}): {
  readonly platform: GitTestPlatform;
  client(): Promise<GitClient>;
} {
  const db = useTestStore("sqlite");
  let platform: GitTestPlatform | undefined;
  const clients: GitClient[] = [];
  beforeEach(async () => {
    platform = await startGitPlatform(db.store, routerOptions);
  });
  afterEach(async () => {
    await platform?.close();
    platform = undefined;
    await Promise.all(clients.splice(0).map((c) => c.dispose()));
  });
  return {
    get platform(): GitTestPlatform {
      if (!platform) throw new Error("git platform used outside a test");
      return platform;
    },
    async client() {
      const c = await GitClient.create();
      clients.push(c);
      return c;
    },
  };
}

export interface GitResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A `git` client with its own HOME and no system or global configuration, proxies or prompts. */
export class GitClient {
  private constructor(readonly home: string) {}

  static async create(): Promise<GitClient> {
    const home = await mkdtemp(join(tmpdir(), "kasbridge-git-client-"));
    await writeFile(join(home, ".gitconfig"), "");
    return new GitClient(home);
  }

  env(): Record<string, string> {
    return {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: this.home,
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_CONFIG_GLOBAL: join(this.home, ".gitconfig"),
      GIT_TERMINAL_PROMPT: "0",
      GIT_AUTHOR_NAME: "Test Author",
      GIT_AUTHOR_EMAIL: "author@example.com",
      GIT_COMMITTER_NAME: "Test Author",
      GIT_COMMITTER_EMAIL: "author@example.com",
      LANG: "C",
      LC_ALL: "C",
    };
  }

  /** Runs git in `cwd` (relative to HOME); never throws for a non-zero exit. */
  run(args: string[], cwd = "."): Promise<GitResult> {
    return new Promise((resolve) => {
      execFile("git", args, { cwd: join(this.home, cwd), env: this.env(), maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Like run, but throws with git's stderr on failure. */
  async ok(args: string[], cwd = "."): Promise<string> {
    const r = await this.run(args, cwd);
    if (r.code !== 0) throw new Error(`git ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  }

  /** Writes files in the work tree `cwd`, commits them all and returns the commit id. */
  async commit(cwd: string, files: Record<string, string | Buffer>, message = "change"): Promise<string> {
    for (const [path, content] of Object.entries(files)) {
      const full = join(this.home, cwd, path);
      await mkdir(join(full, ".."), { recursive: true });
      await writeFile(full, content);
    }
    await this.ok(["add", "-A"], cwd);
    await this.ok(["commit", "-q", "-m", message], cwd);
    return (await this.ok(["rev-parse", "HEAD"], cwd)).trim();
  }

  async dispose(): Promise<void> {
    await rm(this.home, { recursive: true, force: true });
  }
}

export const ZERO_OID = "0".repeat(40);

/** One pkt-line of git's wire protocol: 4 hex digits of length (itself included), then the text. */
export function pkt(text: string): string {
  return (Buffer.byteLength(text) + 4).toString(16).padStart(4, "0") + text;
}
