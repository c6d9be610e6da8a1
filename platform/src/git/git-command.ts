import { execFile } from "node:child_process";
import { devNull } from "node:os";

/** Variables passed from the platform's own environment to every git process it starts. */
const INHERITED_ENV = ["PATH", "HOME", "TMPDIR", "TMP", "TEMP", "TZ", "LANG", "LC_ALL", "SystemRoot", "SYSTEMROOT"];

/**
 * The environment of every server-side git process: a short allow-list of the platform's own
 * variables (never the rest: it may hold database URLs and tokens, and hooks would see them), with
 * the operator's system and global git configuration shut out, so repositories behave the same on
 * every machine.
 */
export function gitEnvironment(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of INHERITED_ENV) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  env.GIT_CONFIG_NOSYSTEM = "1";
  env.GIT_CONFIG_GLOBAL = devNull;
  env.GIT_TERMINAL_PROMPT = "0";
  return Object.assign(env, extra);
}

/**
 * `-c key=value` settings as environment variables (GIT_CONFIG_COUNT, git >= 2.31): they reach
 * every git process below the one started, hooks and http-backend's children included.
 */
export function gitConfigEnvironment(settings: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  const entries = Object.entries(settings);
  entries.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  env.GIT_CONFIG_COUNT = String(entries.length);
  return env;
}

/** A git command that failed; `stderr` is truncated and never holds credentials (none are passed). */
export class GitCommandError extends Error {
  override readonly name = "GitCommandError";
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(`git ${args[0] === "-C" ? args.slice(2, 4).join(" ") : args.slice(0, 2).join(" ")} failed (exit ${exitCode}): ${stderr.trim().slice(0, 500)}`, options);
  }
}

export interface RunGitOptions {
  env?: Record<string, string>;
  /** Largest stdout accepted; more fails the command. Default 64 MiB. */
  maxOutputBytes?: number;
  signal?: AbortSignal;
}

/**
 * Runs `git <args>` without a shell and returns its stdout. Callers validate every user-supplied
 * argument and put revisions after `--end-of-options` and paths after `--`.
 */
export function runGit(gitBinary: string, args: readonly string[], options: RunGitOptions = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(
      gitBinary,
      args,
      {
        encoding: "buffer",
        env: options.env ?? gitEnvironment(),
        maxBuffer: options.maxOutputBytes ?? 64 * 1024 * 1024,
        signal: options.signal,
        windowsHide: true,
      },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : null;
          reject(new GitCommandError(args, code, stderr.toString("utf8"), { cause: err }));
          return;
        }
        resolve(stdout);
      },
    );
  });
}

const execPaths = new Map<string, Promise<string>>();

/** `git --exec-path`: where git-http-backend and friends live. Cached per binary. */
export function gitExecPath(gitBinary: string): Promise<string> {
  let found = execPaths.get(gitBinary);
  if (!found) {
    found = runGit(gitBinary, ["--exec-path"]).then((out) => out.toString("utf8").trim());
    found.catch(() => execPaths.delete(gitBinary));
    execPaths.set(gitBinary, found);
  }
  return found;
}
