// The mocha side of the Flux and GitOps end-to-end suites (a *.test-support.ts file: no tests):
// one control plane and one kas per suite, released after it.
import { rmSync } from "node:fs";
import { findBinaries, startControlPlane, type ControlPlane, type ControlPlaneOptions } from "../tools/control-plane/control-plane.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
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

