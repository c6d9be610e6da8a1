import type { Duration } from "@bufbuild/protobuf/wkt";
import type { AgentConfiguration, ManifestProjectCF } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { GitRefCF, PathCF } from "../../../gen/gitlab/agent/gitops/rpc/rpc_pb.js";
import type { InventoryPolicy, SyncSettings } from "./applier.js";

/** GitLab's default `paths`: every YAML and JSON file of the repository. */
export const DEFAULT_MANIFEST_GLOB = "**/*.{yaml,yml,json}";

/** One `gitops.manifest_projects[]` entry with GitLab's defaults applied. */
export interface ManifestProjectSettings extends SyncSettings {
  /** Full path of the manifest project. */
  project: string;
  ref: GitRefCF["ref"];
  paths: Array<PathCF["path"]>;
}

const durationMs = (d: Duration | undefined, defaultMs: number) =>
  d === undefined ? defaultMs : Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);

/**
 * The settings of each manifest project of an agent configuration (GitLab's defaults: the config
 * project itself, the default branch, namespace `default`, every YAML/JSON file, prune on with
 * foreground deletion, 1 h timeouts, inventory policy must_match, no dry run).
 */
export function manifestProjects(config: AgentConfiguration): ManifestProjectSettings[] {
  return (config.gitops?.manifestProjects ?? []).map((p: ManifestProjectCF) => ({
    project: p.id ?? config.projectPath,
    ref: p.ref?.ref.case ? { case: p.ref.ref.case, value: p.ref.ref.value } : { case: undefined },
    paths: p.paths.length > 0 ? p.paths.map((path) => ({ case: "glob" as const, value: path.glob })) : [{ case: "glob", value: DEFAULT_MANIFEST_GLOB }],
    defaultNamespace: p.defaultNamespace || "default",
    prune: p.pruneOneof.case === "prune" ? p.pruneOneof.value : true,
    pruneTimeoutMs: durationMs(p.pruneTimeout, 3_600_000),
    prunePropagationPolicy: p.prunePropagationPolicy || "foreground",
    reconcileTimeoutMs: durationMs(p.reconcileTimeout, 3_600_000),
    inventoryPolicy: (p.inventoryPolicy || "must_match") as InventoryPolicy,
    dryRunStrategy: (p.dryRunStrategy || "none") as SyncSettings["dryRunStrategy"],
  }));
}

/** A stable identity of a project's settings: a worker restarts when it changes. */
export function settingsKey(s: ManifestProjectSettings): string {
  return JSON.stringify(s);
}
