// Process supervision for the control plane's long-running components (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok).
//
// Every component runs in its own process group under a small bash watchdog that ends it when
// this Node.js process goes away (even by SIGKILL: the watchdog reads a pipe from us and sees
// EOF). stopAll() ends the groups in reverse start order and returns once each binary is gone.
// A process 'exit' hook and SIGINT/SIGTERM/SIGHUP handlers kill what is still running as a last
// resort.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { childEnv } from "./run-command.js";

/** A component that exited while the control plane was starting; `log` is the end of its log. */
export class ComponentExitedError extends Error {
  constructor(
    readonly component: string,
    readonly log: string,
    message: string,
  ) {
    super(message);
  }
}

interface Supervised {
  name: string;
  child: ChildProcess;
  logPath: string;
  exited: Promise<number | null>;
  exitCode: number | null | undefined; // undefined while running
}

export interface SupervisorOptions {
  /** Folder named in readiness errors (where the logs are). */
  dir: string;
  /** Aborting makes start/checkAlive/waitUntil throw the abort reason. */
  signal?: AbortSignal;
  /** How long waitUntil waits for each component (default 90 s). */
  readyTimeoutMs?: number;
}

/** The components of one control plane: started in order, checked while starting, stopped in reverse. */
export class Supervisor {
  private readonly procs: Supervised[] = [];
  private stopping = false;
  private readonly readyTimeoutMs: number;

  constructor(private readonly options: SupervisorOptions) {
    this.readyTimeoutMs = options.readyTimeoutMs ?? 90_000;
    installExitHooks();
  }

  /** Starts a component (stdout and stderr to logPath); refused once stopAll() has begun or on abort. */
  start(name: string, command: string, args: string[], logPath: string, env?: NodeJS.ProcessEnv): void {
    this.options.signal?.throwIfAborted();
    if (this.stopping) throw new Error("control plane stopped during start");
    this.procs.push(supervise(name, command, args, logPath, env));
  }

  /** Throws when aborted or when a component has exited (with the end of its log). */
  checkAlive(): void {
    this.options.signal?.throwIfAborted();
    for (const p of this.procs) {
      if (p.exitCode !== undefined) {
        const log = tail(p.logPath);
        throw new ComponentExitedError(p.name, log, `${p.name} exited (${p.exitCode}) during start; ${p.logPath}:\n${log}`);
      }
    }
  }

  /** Polls `probe` until it returns true; fails early when a component exits, and after readyTimeoutMs. */
  async waitUntil(what: string, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      this.checkAlive();
      if (await probe().catch(() => false)) return;
      if (Date.now() > deadline) {
        const logs = this.procs.map((p) => `--- ${p.name}\n${tail(p.logPath, 15)}`).join("\n");
        throw new Error(`${what} not ready after ${this.readyTimeoutMs} ms; logs in ${this.options.dir}:\n${logs}`);
      }
      await delay(200).promise;
    }
  }

  /** From now on start() throws: the control plane is being stopped. */
  refuseNewStarts(): void {
    this.stopping = true;
  }

  /** Ends every component, the last started first. */
  async stopAll(): Promise<void> {
    this.refuseNewStarts();
    for (const p of [...this.procs].reverse()) await terminate(p);
  }
}

/** Process groups still alive, across all control planes of this process. */
const liveGroups = new Set<number>();
let hooksInstalled = false;

function killGroupsNow(): void {
  for (const pgid of liveGroups) signalGroup(pgid, "SIGKILL");
  liveGroups.clear();
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", killGroupsNow);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const handler = () => {
      killGroupsNow();
      // Keep the default behaviour (terminate) when nobody else handles the signal.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, handler);
  }
}

// The watchdog: runs the binary in the background, ends it when our pipe on fd 0 closes (this
// process is gone, however it ended), passes SIGTERM on, and exits only once it has reaped the
// binary, so that the watchdog's exit means the binary is gone.
const WATCHDOG = [
  "exec 3<&0 0</dev/null",
  '"$@" 3<&- &',
  "pid=$!",
  "trap 'kill -TERM $pid 2>/dev/null' TERM INT HUP",
  "( cat <&3 >/dev/null; kill -TERM $pid 2>/dev/null; for i in $(seq 50); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL $pid 2>/dev/null ) &",
  "exec 3<&-",
  "while :; do wait $pid; rc=$?; kill -0 $pid 2>/dev/null || exit $rc; done",
].join("\n");

function supervise(name: string, command: string, args: string[], logPath: string, env?: NodeJS.ProcessEnv): Supervised {
  const fd = openSync(logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn("bash", ["-c", WATCHDOG, name, command, ...args], {
      stdio: ["pipe", fd, fd],
      detached: true, // own process group: terminate() kills it whole
      env: env ?? childEnv(),
    });
  } finally {
    closeSync(fd);
  }
  const pgid = child.pid!;
  liveGroups.add(pgid);
  child.stdin!.on("error", () => {});
  child.unref(); // the watchdog pipe must not keep mocha alive
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  const s: Supervised = {
    name,
    child,
    logPath,
    exitCode: undefined,
    exited: new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        s.exitCode = code ?? (signal ? 128 : null);
        resolve(s.exitCode);
      });
      child.on("error", () => {
        s.exitCode = 127;
        resolve(127);
      });
    }),
  };
  return s;
}

function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * SIGTERM to the whole process group, SIGKILL after graceMs. The watchdog exits only after it has
 * reaped the binary, so its exit is the signal that the binary is gone.
 */
async function terminate(s: Supervised, graceMs = 5000): Promise<void> {
  const pgid = s.child.pid!;
  const waitExit = async (ms: number) => {
    if (s.exitCode !== undefined) return;
    const timer = delay(ms);
    await Promise.race([s.exited, timer.promise]);
    timer.cancel();
  };
  signalGroup(pgid, "SIGTERM");
  await waitExit(graceMs);
  // Whatever is left in the group (the pipe reader, a binary that ignored SIGTERM) ends now.
  signalGroup(pgid, "SIGKILL");
  await waitExit(2000);
  liveGroups.delete(pgid);
}

function tail(path: string, lines = 30): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function delay(ms: number): { promise: Promise<void>; cancel(): void } {
  let t: NodeJS.Timeout;
  const promise = new Promise<void>((resolve) => {
    t = setTimeout(resolve, ms);
  });
  return { promise, cancel: () => clearTimeout(t) };
}
