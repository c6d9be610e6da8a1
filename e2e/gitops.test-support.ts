// Helpers of the Flux and GitOps end-to-end tests (a *.test-support.ts file: no tests): Flux's
// CRDs from the shared fixtures, a stand-in for Flux's webhook receiver, kubectl JSON reads.
import { existsSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ControlPlane } from "../tools/control-plane/control-plane.js";
import { closeServer, listen } from "@kasbridge/testing/servers";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The folder with Flux's GitRepository and Receiver CRDs: KASBRIDGE_FLUX_CRDS_DIR, or
 * `shared/fixtures/flux` beside the checkout or beside any folder above it (a git worktree or a
 * clone nested deeper). The CRDs are outside test data, kept out of the repository.
 */
export function fluxCrdsDir(): string {
  const candidates = [process.env.KASBRIDGE_FLUX_CRDS_DIR];
  for (let dir = root; ; dir = dirname(dir)) {
    candidates.push(join(dir, "..", "shared", "fixtures", "flux"));
    if (dirname(dir) === dir) break;
  }
  const existing = candidates.filter((d): d is string => !!d);
  const found = existing.find((d) => existsSync(join(d, "source.toolkit.fluxcd.io_gitrepositories.yaml")));
  if (!found) throw new Error(`Flux CRD fixtures not found (looked in ${existing.join(", ")}); set KASBRIDGE_FLUX_CRDS_DIR`);
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
