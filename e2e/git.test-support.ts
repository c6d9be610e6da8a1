import { execFile } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A git client isolated from the machine's and user's git configuration. */
export class GitClient {
  readonly home = mkdtempSync(join(tmpdir(), "git-home-"));
  private readonly env = {
    ...process.env,
    HOME: this.home,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_TERMINAL_PROMPT: "0",
    GIT_AUTHOR_NAME: "E2E",
    GIT_AUTHOR_EMAIL: "e2e@example.com",
    GIT_COMMITTER_NAME: "E2E",
    GIT_COMMITTER_EMAIL: "e2e@example.com",
  };

  async git(cwd: string, ...args: string[]): Promise<string> {
    const { stdout } = await run("git", args, { cwd, env: this.env, maxBuffer: 64 << 20 });
    return stdout.trim();
  }

  /** Clones `url` (credentials inside) into a new directory, on branch `main`. */
  async clone(url: string): Promise<string> {
    const dir = join(mkdtempSync(join(this.home, "wc-")), "repo");
    await run("git", ["clone", "--quiet", url, dir], { env: this.env });
    await this.git(dir, "checkout", "-q", "-B", "main");
    return dir;
  }

  /** Writes files, commits them and returns the new commit id. */
  async commit(dir: string, files: Record<string, string>, message = "update"): Promise<string> {
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), content);
    }
    await this.git(dir, "add", "-A");
    await this.git(dir, "commit", "-q", "-m", message);
    return this.git(dir, "rev-parse", "HEAD");
  }

  push(dir: string, ref = "main"): Promise<string> {
    return this.git(dir, "push", "-q", "origin", `HEAD:refs/heads/${ref}`);
  }
}
