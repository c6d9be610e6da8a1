/**
 * Test harness (a *.test-support.ts file: no tests, not in the package): real git repositories made with the
 * `git` CLI in a temp dir, one per project id, behind the AgentConfigRepositories interface. A
 * commit is announced to push listeners the way the platform's repository service does it.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { AgentConfigRepositories, PushEvent, PushListener } from "./repository.js";

const ZERO = "0".repeat(40);

function git(cwd: string, args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(
      "git",
      ["-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", ...args],
      {
        cwd,
        encoding: "buffer",
        maxBuffer: 64 * 1024 * 1024,
        env: {
          PATH: process.env.PATH ?? "",
          HOME: cwd,
          GIT_CONFIG_NOSYSTEM: "1",
          GIT_AUTHOR_NAME: "Test",
          GIT_AUTHOR_EMAIL: "test@example.com",
          GIT_COMMITTER_NAME: "Test",
          GIT_COMMITTER_EMAIL: "test@example.com",
        },
      },
      (err, stdout, stderr) => {
        if (err) reject(Object.assign(err, { stderr: stderr.toString() }));
        else resolve(stdout);
      },
    );
  });
}

export interface TestCommit {
  before: string;
  after: string;
  changedPaths: string[];
}

export class TestRepositories implements AgentConfigRepositories {
  private readonly listeners = new Set<PushListener>();
  private readonly dirs = new Map<number, string>();
  /** Checked-out branch per repository, once it has a commit. */
  private readonly branches = new Map<number, string>();
  private root: string | undefined;
  /** Calls of readFile, for assertions. */
  reads = 0;
  /** When set, readFile throws it. */
  failReads: Error | undefined;

  async init(projectId: number, defaultBranch = "main"): Promise<string> {
    this.root ??= await mkdtemp(join(tmpdir(), "kasbridge-agentcfg-git-"));
    const dir = join(this.root, `${projectId}`);
    await mkdir(dir, { recursive: true });
    await git(dir, ["init", "-q", "-b", defaultBranch]);
    this.dirs.set(projectId, dir);
    return dir;
  }

  private dir(projectId: number): string {
    const dir = this.dirs.get(projectId);
    if (!dir) throw new Error(`no repository for project ${projectId}`);
    return dir;
  }

  /**
   * Commits `files` (content, or null to delete) on `branch` and, unless `announce` is false,
   * calls the push listeners with the event (returned too).
   */
  async commit(
    projectId: number,
    files: Record<string, string | Buffer | null>,
    options: { branch?: string; announce?: boolean } = {},
  ): Promise<PushEvent> {
    const dir = this.dir(projectId);
    const branch = options.branch ?? "main";
    const before = (await this.resolveRef(projectId, branch)) ?? ZERO;
    const current = this.branches.get(projectId);
    if (current !== branch) {
      if (before !== ZERO) await git(dir, ["checkout", "-q", branch]);
      else if (current !== undefined) await git(dir, ["checkout", "-q", "-b", branch]); // from the current commit
      else await git(dir, ["symbolic-ref", "HEAD", `refs/heads/${branch}`]); // unborn: the first commit
      this.branches.set(projectId, branch);
    }
    for (const [path, content] of Object.entries(files)) {
      if (content === null) {
        await rm(join(dir, path), { force: true });
      } else {
        await mkdir(dirname(join(dir, path)), { recursive: true });
        await writeFile(join(dir, path), content);
      }
    }
    await git(dir, ["add", "-A"]);
    await git(dir, ["commit", "-q", "--allow-empty", "-m", `change ${Object.keys(files).join(", ")}`]);
    const after = (await this.resolveRef(projectId, branch))!;
    const changed =
      before === ZERO
        ? await git(dir, ["ls-tree", "-r", "--name-only", "-z", after])
        : await git(dir, ["diff-tree", "-r", "--name-only", "--no-renames", "-z", before, after]);
    const event: PushEvent = {
      projectId,
      ref: `refs/heads/${branch}`,
      before,
      after,
      changedPaths: changed.toString().split("\0").filter((p) => p !== ""),
    };
    if (options.announce !== false) this.announce(event);
    return event;
  }

  announce(event: PushEvent): void {
    for (const listener of [...this.listeners]) listener({ ...event, changedPaths: [...event.changedPaths] });
  }

  onPush(listener: PushListener): () => void {
    const wrapped: PushListener = (e) => listener(e);
    this.listeners.add(wrapped);
    return () => void this.listeners.delete(wrapped);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  async resolveRef(projectId: number, ref: string): Promise<string | undefined> {
    try {
      return (await git(this.dir(projectId), ["rev-parse", "--verify", "-q", `${ref}^{commit}`])).toString().trim();
    } catch {
      return undefined;
    }
  }

  async isAncestor(projectId: number, ancestor: string, descendant: string): Promise<boolean> {
    try {
      await git(this.dir(projectId), ["merge-base", "--is-ancestor", ancestor, descendant]);
      return true;
    } catch {
      return false;
    }
  }

  async readFile(projectId: number, ref: string, path: string): Promise<Buffer | undefined> {
    this.reads++;
    if (this.failReads) throw this.failReads;
    const dir = this.dirs.get(projectId);
    if (!dir) return undefined;
    let blob: string;
    try {
      blob = (await git(dir, ["rev-parse", "--verify", "-q", `${ref}:${path}`])).toString().trim();
    } catch {
      return undefined;
    }
    if ((await git(dir, ["cat-file", "-t", blob])).toString().trim() !== "blob") return undefined;
    return git(dir, ["cat-file", "blob", blob]);
  }

  async dispose(): Promise<void> {
    if (this.root) await rm(this.root, { recursive: true, force: true });
    this.root = undefined;
    this.dirs.clear();
    this.branches.clear();
    this.listeners.clear();
  }
}
