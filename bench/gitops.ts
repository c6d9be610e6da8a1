/**
 * Section 6 of `npm run bench`: GitOps with the real `kas` and `agentk` processes, real git pushes
 * and a real kube-apiserver (no kwok, no controllers: ConfigMaps are ready once applied):
 *
 * - Flux mode: `git push` started -> Flux's webhook receiver gets agentk's POST (the platform tells
 *   KAS, KAS tells agentk on ReconcileProjects, agentk POSTs the Receiver's webhook path); the
 *   receiver is a stand-in HTTP server, as in the e2e test;
 * - built-in mode: `git push` started -> agentk has applied the commit's manifests (its
 *   "manifests synchronized" log line): KAS reads the commit and streams it, agentk decodes,
 *   dry-runs, applies and checks readiness of 20 ConfigMaps.
 *
 * Knob: BENCH_GITOPS_ROUNDS (10).
 */
import { rmSync } from "node:fs";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { controlPlaneBinDir, findBinaries, startControlPlane } from "../tools/control-plane/control-plane.js";
import { GitClient } from "../e2e/git.test-support.js";
import { installFluxCrds, startWebhookReceiver } from "../e2e/gitops.test-support.js";
import { adminToken, api, createAgentWithToken, startAgentk, startKas, type Proc } from "../e2e/harness.test-support.js";
import { fmt, median, percentile } from "./common.js";

export interface GitopsResult {
  skipped?: string;
  /** ms from the start of `git push` to the Flux webhook POST. */
  pushToWebhook: number[];
  /** ms from the start of `git push` to agentk having applied the manifests. */
  pushToApplied: number[];
}

type Table = (head: string[], rows: string[][]) => void;

const rounds = Number(process.env.BENCH_GITOPS_ROUNDS ?? 10);
const TARGET_MS = 1000;
const OBJECTS = 20;

/** The `time` of agentk's log line saying `commit` was synchronized. */
async function syncedAt(agentk: Proc, commit: string): Promise<number> {
  let time: number | undefined;
  await waitFor(
    () => {
      const line = agentk.output.split("\n").find((l) => l.includes('"msg":"manifests synchronized"') && l.includes(commit));
      if (line) time = (JSON.parse(line) as { time: number }).time;
      return time !== undefined;
    },
    60_000,
    `agentk to apply ${commit}`,
  );
  return time!;
}

export async function measureGitops(table: Table, verdict: (ok: boolean) => string): Promise<GitopsResult> {
  const binDir = process.env.KASBRIDGE_CONTROL_PLANE_DIR ?? controlPlaneBinDir();
  try {
    findBinaries(binDir);
  } catch (e) {
    const skipped = (e as Error).message;
    console.log(`  SKIPPED: ${skipped}`);
    return { skipped, pushToWebhook: [], pushToApplied: [] };
  }
  const cleanup = new Cleanup();
  const git = new GitClient();
  cleanup.add(() => rmSync(git.home, { recursive: true, force: true }));
  try {
    const cp = await startControlPlane({ binDir, kwok: false, agentRules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["*"] }] });
    cleanup.add(() => cp.stop());
    await installFluxCrds(cp);
    const kas = await startKas({ KAS_LOG_LEVEL: "info", KAS_EXTERNAL_URL: "http://127.0.0.1" });
    cleanup.add(() => kas.cleanup());
    const receiver = await startWebhookReceiver();
    cleanup.add(() => receiver.close());
    const repoUrl = (path: string) => `http://root:${adminToken}@${new URL(kas.addresses.platform!).host}/${path}.git`;

    const manifests = (await api(kas, "POST", "/projects", { name: "bench-manifests", visibility: "public" })).json as { path_with_namespace: string };
    const wc = await git.clone(repoUrl(manifests.path_with_namespace));
    await cp.runKubectl(["create", "namespace", "bench-gitops"]);
    await cp.runKubectl(["create", "namespace", "flux-system"]);
    const a = await createAgentWithToken(kas, "bench");
    const config = (await api(kas, "GET", `/projects/${a.projectId}`)).json as { path_with_namespace: string };
    const configWc = await git.clone(repoUrl(config.path_with_namespace));
    await git.commit(configWc, {
      ".gitlab/agents/bench/config.yaml":
        `flux:\n  webhook_receiver_url: ${receiver.url}\ngitops:\n  manifest_projects:\n  - id: ${manifests.path_with_namespace}\n    default_namespace: bench-gitops\n`,
    });
    await git.push(configWc);
    const agentk = startAgentk(kas.addresses.agent, a.token, {}, ["--log-level", "info", "--kubeconfig", cp.agentKubeconfigPath]);
    cleanup.add(() => agentk.cleanup());
    await cp.runKubectl(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "source.toolkit.fluxcd.io/v1",
        kind: "GitRepository",
        metadata: { name: "bench", namespace: "flux-system" },
        spec: { url: `http://${new URL(kas.addresses.platform!).host}/${manifests.path_with_namespace}.git`, interval: "10m" },
      }),
    });
    await waitFor(async () => (await cp.runKubectl(["get", "receivers.notification.toolkit.fluxcd.io", "-n", "flux-system", "gitlab-bench"], { allowFailure: true })).code === 0, 60_000, "the Receiver");
    await cp.runKubectl([
      "patch", "receivers.notification.toolkit.fluxcd.io", "gitlab-bench", "-n", "flux-system",
      "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { webhookPath: "/hook/bench" } }),
    ]);
    await kas.waitFor(/ReconcileProjects stream opened/, "the ReconcileProjects stream", 60_000);

    const result: GitopsResult = { pushToWebhook: [], pushToApplied: [] };
    for (let i = 0; i < rounds; i++) {
      const files: Record<string, string> = {};
      for (let j = 0; j < OBJECTS; j++) {
        files[`cm-${j}.yaml`] = `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-${j}\ndata:\n  round: "${i}"\n`;
      }
      const commit = await git.commit(wc, files);
      const hooks = receiver.hooks.length;
      const started = Date.now();
      await git.push(wc);
      await waitFor(() => receiver.hooks.length > hooks, 30_000, "the Flux webhook");
      result.pushToWebhook.push(receiver.hooks[hooks]!.at - started);
      result.pushToApplied.push((await syncedAt(agentk, commit)) - started);
    }
    const row = (label: string, values: number[]) => {
      const sorted = [...values].sort((x, y) => x - y);
      return [label, String(values.length), fmt(median(values), 0), fmt(percentile(sorted, 90), 0), fmt(sorted.at(-1)!, 0), verdict(median(values) <= TARGET_MS)];
    };
    table(
      ["event -> effect (ms)", "rounds", "median", "p90", "max", `target: median <= ${TARGET_MS} ms`],
      [
        row("git push started -> Flux webhook POSTed by agentk", result.pushToWebhook),
        row(`git push started -> agentk applied ${OBJECTS} ConfigMaps (built-in GitOps)`, result.pushToApplied),
      ],
    );
    return result;
  } finally {
    await cleanup.run();
  }
}
