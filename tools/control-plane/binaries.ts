// Where the control plane's binaries are: the cache folder that build.sh builds into (its key
// hashes the versions and wrapper modules, so only build.sh computes it), and a check that all
// of them are there with a message that says how to build them.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

export const BINARIES = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "kwok"] as const;
export type BinaryName = (typeof BINARIES)[number];

/** The cache folder build.sh builds into (same key computation: asks build.sh itself). */
export function controlPlaneBinDir(): string {
  const r = spawnSync("bash", [join(here, "build.sh"), "--print-dir"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`tools/control-plane/build.sh --print-dir failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** The binaries' paths, or an Error telling how to build them. */
export function findBinaries(binDir = controlPlaneBinDir()): Record<BinaryName, string> {
  const missing = BINARIES.filter((b) => !isExecutable(join(binDir, b)));
  if (missing.length > 0 || !existsSync(join(binDir, "control-plane.stamp"))) {
    throw new Error(
      `Kubernetes control-plane binaries are not built (missing in ${binDir}: ` +
        `${missing.length ? missing.join(", ") : "control-plane.stamp"}). ` +
        "Run `npm run control-plane` (tools/control-plane/build.sh) first; it builds them once from the Go module proxy.",
    );
  }
  return Object.fromEntries(BINARIES.map((b) => [b, join(binDir, b)])) as Record<BinaryName, string>;
}

function isExecutable(path: string): boolean {
  try {
    const stat = statSync(path);
    return stat.isFile() && (stat.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}
