// Helpers of the Flux and GitOps end-to-end tests (a *.test-support.ts file: no tests): Flux's
// CRDs from the shared fixtures, a stand-in for Flux's webhook receiver, kubectl JSON reads.
import { existsSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { findBinaries, startControlPlane, type ControlPlane, type ControlPlaneOptions } from "../tools/control-plane/control-plane.js";
import { Cleanup } from "../sdk/src/testing/cleanup.test-support.js";
import { closeServer, listen } from "../sdk/src/testing/servers.test-support.js";
import { GitClient } from "./git.test-support.js";
import { adminToken, startKas, type KasProcess } from "./harness.test-support.js";

/** What a Flux or GitOps suite runs on: a control plane where the agent may do anything, a kas, a git client. */
export interface ClusterSuite {
  readonly cp: ControlPlane;
  readonly kas: KasProcess;
  readonly git: GitClient;
  readonly cleanups: Cleanup;
  /** A clone URL of a platform project with the admin's credentials. */
  repoUrl(pathWithNamespace: string): string;
}

/**
 * Registers the suite's before/after hooks: starts the control plane (with `options`, the agent
 * granted everything, as GitLab's chart grants agentk cluster-admin) and kas (with `kasEnv`), and
 * releases everything afterwards, the things the tests added included.
 */
export function clusterSuite(options: ControlPlaneOptions, kasEnv: Record<string, string> = {}): ClusterSuite {
  const cleanups = new Cleanup();
  const git = new GitClient();
  cleanups.add(() => rmSync(git.home, { recursive: true, force: true }));
  let cp: ControlPlane | undefined;
  let kas: KasProcess | undefined;
  before(async () => {
    findBinaries(); // "... Run `npm run control-plane` ..." when missing
    cp = await startControlPlane({ ...options, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
    cleanups.add(() => cp!.stop());
    const started = await startKas(kasEnv);
    cleanups.add(() => started.cleanup());
    kas = started;
  });
  after(() => cleanups.run());
  return {
    get cp() {
      return cp!;
    },
    get kas() {
      return kas!;
    },
    git,
    cleanups,
    repoUrl: (path) => `http://root:${adminToken}@${new URL(kas!.addresses.platform!).host}/${path}.git`,
  };
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The folder with Flux's GitRepository and Receiver CRDs: KASBRIDGE_FLUX_CRDS_DIR, or
 * `shared/fixtures/flux` beside the checkout (or beside its parent, for a git worktree).
 */
export function fluxCrdsDir(): string {
  const candidates = [
    process.env.KASBRIDGE_FLUX_CRDS_DIR,
    join(root, "..", "shared", "fixtures", "flux"),
    join(root, "..", "..", "shared", "fixtures", "flux"),
  ].filter((d): d is string => !!d);
  const found = candidates.find((d) => existsSync(join(d, "source.toolkit.fluxcd.io_gitrepositories.yaml")));
  if (!found) throw new Error(`Flux CRD fixtures not found (looked in ${candidates.join(", ")}); set KASBRIDGE_FLUX_CRDS_DIR`);
  return found;
}

/** Installs Flux's two CRDs and waits until both are Established. */
export async function installFluxCrds(cp: ControlPlane): Promise<void> {
  const dir = fluxCrdsDir();
  await cp.runKubectl(["apply", "-f", join(dir, "source.toolkit.fluxcd.io_gitrepositories.yaml"), "-f", join(dir, "notification.toolkit.fluxcd.io_receivers.yaml")]);
  await cp.runKubectl([
    "wait",
    "--for=condition=Established",
    "--timeout=60s",
    "crd/gitrepositories.source.toolkit.fluxcd.io",
    "crd/receivers.notification.toolkit.fluxcd.io",
  ]);
}

/** `kubectl get … -o json`, parsed; undefined when the object does not exist. */
export async function getJson<T = Record<string, any>>(cp: ControlPlane, args: string[]): Promise<T | undefined> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await cp.runKubectl(["get", ...args, "-o", "json"], { allowFailure: true });
  if (r.code !== 0) {
    if (/NotFound|not found/.test(r.stderr)) return undefined;
    throw new Error(`kubectl get ${args.join(" ")}: ${r.stderr}`);
  }
  return JSON.parse(r.stdout) as T;
}

/** One request the webhook receiver stand-in got, and when. */
export interface ReceivedHook {
  method: string;
  path: string;
  body: string;
  at: number;
}

/** Plays Flux's notification-controller webhook receiver: records every request, answers 200. */
export async function startWebhookReceiver(): Promise<{ url: string; hooks: ReceivedHook[]; close(): Promise<void> }> {
  const hooks: ReceivedHook[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      hooks.push({ method: req.method ?? "", path: req.url ?? "", body, at: Date.now() });
      res.writeHead(200).end();
    });
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, hooks, close: () => closeServer(server) };
}
