// One-shot commands (openssl, kubectl): run to completion with a time limit, output collected.
import { spawn } from "node:child_process";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the command's standard input (then closed). */
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** SIGKILL after this long (default 60 s); the result then has code 128. */
  timeoutMs?: number;
  cwd?: string;
}

/**
 * The environment of every child: ours without KUBECONFIG, so that a developer's own cluster is
 * never what a component or kubectl talks to.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.KUBECONFIG;
  return env;
}

/** Runs a command; resolves with its exit code and output whatever the code. */
export function run(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env ?? childEnv(), cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

/** Runs a command; rejects with its output when it exits non-zero. */
export async function mustRun(command: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(command, args, opts);
  if (r.code !== 0) throw commandFailed(command, args, r);
  return r;
}

/** The error for a command that exited non-zero: the command line and what it printed. */
export function commandFailed(command: string, args: string[], r: RunResult): Error {
  return new Error(`${command} ${args.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
}
