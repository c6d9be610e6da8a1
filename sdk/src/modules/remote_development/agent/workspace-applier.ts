/**
 * What the reconciler does in the cluster for one workspace, as GitLab's agentk does it with
 * client-go and the cli-utils applier (gla: remote_development/agent/k8s/client.go): the
 * workspace's namespace (exists? create, delete), and `config_to_apply` applied per inventory
 * with server-side apply as `agentk` (conflicts forced), the inventory policy `must_match` (an
 * object that belongs to another inventory, or to none, is left alone and is an error), and
 * pruning of what an inventory recorded but the config no longer holds.
 *
 * The inventory is cli-utils' ConfigMap: one `data` key per object, `<ns>_<name>_<group>_<kind>`,
 * value "" (status policy none). As cli-utils does, the union of old and new objects is recorded
 * before anything is applied, so an interrupted apply still knows what it may have to prune.
 */
import { isNotFound, KubeApiError, type KubeHttp } from "../../../agent/kube/kube-http.js";
import { resourcePath, type ResourceInfo, type ResourceMapper } from "../../../agent/kube/resource-mapper.js";
import { FIELD_MANAGER } from "../../gitops/agent/applier.js";
import { inventoryKey, OWNING_INVENTORY_ANNOTATION, parseInventoryKey } from "../../gitops/agent/inventory.js";
import type { ManifestObject } from "../../gitops/agent/manifest-decoder.js";
import { groupByInventory, type InventoryGroup } from "./workspace-config.js";

/** Namespaces the agent never deletes, whatever the platform asks. */
const PROTECTED_NAMESPACES = new Set(["default", "kube-system", "kube-public", "kube-node-lease"]);

/** cli-utils' apply order (its kind ordering); kinds not listed come last, in config order. */
const KIND_ORDER = [
  "Namespace",
  "ResourceQuota",
  "LimitRange",
  "NetworkPolicy",
  "ServiceAccount",
  "Secret",
  "ConfigMap",
  "PersistentVolumeClaim",
  "Role",
  "RoleBinding",
  "Service",
  "Pod",
  "ReplicaSet",
  "Deployment",
  "StatefulSet",
  "Job",
  "CronJob",
  "PodDisruptionBudget",
];
const kindRank = (kind: string) => {
  const i = KIND_ORDER.indexOf(kind);
  return i < 0 ? KIND_ORDER.length : i;
};

/** Longest error message kept for the platform (GitLab's agentk sends the applier's errors whole). */
const MAX_ERROR_CHARS = 4_000;

export interface WorkspaceApplierOptions {
  kube: KubeHttp;
  mapper: ResourceMapper;
  /** Longest time one API request may take. */
  requestTimeoutMs: number;
  /** The agent's own namespace: never deleted either. */
  agentNamespace?: string;
}

/** The outcome of applying one config: undefined when everything was applied (and pruned). */
export type ApplyErrors = string | undefined;

export class WorkspaceApplier {
  constructor(private readonly options: WorkspaceApplierOptions) {}

  private signal(signal: AbortSignal): AbortSignal {
    return AbortSignal.any([signal, AbortSignal.timeout(this.options.requestTimeoutMs)]);
  }

  private nsPath(namespace: string): string {
    return `/api/v1/namespaces/${encodeURIComponent(namespace)}`;
  }

  /** Whether the namespace exists (a terminating one does). */
  async namespaceExists(namespace: string, signal: AbortSignal): Promise<boolean> {
    try {
      await this.options.kube.json("GET", this.nsPath(namespace), { signal: this.signal(signal) });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  /** Creates the namespace; one that exists already is fine. */
  async createNamespace(namespace: string, signal: AbortSignal): Promise<void> {
    try {
      await this.options.kube.json("POST", "/api/v1/namespaces", {
        body: { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } },
        query: { fieldManager: FIELD_MANAGER },
        signal: this.signal(signal),
      });
    } catch (error) {
      if (!(error instanceof KubeApiError && error.status === 409)) throw error;
    }
  }

  /**
   * Deletes the namespace (and so everything in it); resolves false when it is gone already. A
   * namespace being deleted answers 409 (its content is being removed): that is progress too.
   */
  async deleteNamespace(namespace: string, signal: AbortSignal): Promise<boolean> {
    if (PROTECTED_NAMESPACES.has(namespace) || namespace === this.options.agentNamespace) {
      throw new Error(`refusing to delete namespace ${namespace}: it is not a workspace's`);
    }
    try {
      await this.options.kube.json("DELETE", this.nsPath(namespace), { signal: this.signal(signal) });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      if (error instanceof KubeApiError && error.status === 409) return true;
      throw error;
    }
  }

  /**
   * Applies `config` (multi-document YAML) in `namespace`, inventory by inventory. Resolves the
   * errors of the objects that could not be applied or pruned (undefined when none); rejects only
   * when `signal` aborts.
   */
  async apply(config: string, namespace: string, signal: AbortSignal): Promise<ApplyErrors> {
    let groups: InventoryGroup[];
    try {
      groups = groupByInventory(config, namespace);
    } catch (error) {
      return bounded([(error as Error).message]);
    }
    const errors: string[] = [];
    for (const group of groups) {
      try {
        errors.push(...(await this.applyInventory(group, signal)));
      } catch (error) {
        signal.throwIfAborted();
        errors.push(`inventory ${group.inventory.metadata.name}: ${(error as Error).message}`);
      }
    }
    return bounded(errors);
  }

  private async applyInventory(group: InventoryGroup, signal: AbortSignal): Promise<string[]> {
    const { kube, mapper } = this.options;
    const namespace = group.inventory.metadata.namespace!;
    const inventoryPath = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps/${encodeURIComponent(group.inventory.metadata.name)}`;
    const previous = await this.readInventory(inventoryPath, group.id, signal);
    const errors: string[] = [];

    const planned: Array<{ object: ManifestObject; info: ResourceInfo; key: string }> = [];
    for (const object of group.objects) {
      const info = await mapper.resource(object.apiVersion, object.kind, this.signal(signal));
      if (!info) {
        errors.push(`${object.kind} ${object.metadata.name}: unknown kind ${object.kind} in ${object.apiVersion}`);
        continue;
      }
      if (!info.namespaced) {
        errors.push(`${object.kind} ${object.metadata.name}: a cluster-scoped kind, not in the workspace's namespace`);
        continue;
      }
      planned.push({ object, info, key: inventoryKey(info.group, object.kind, namespace, object.metadata.name) });
    }
    planned.sort((a, b) => kindRank(a.object.kind) - kindRank(b.object.kind));

    // Record old and new before applying.
    await this.writeInventory(group, inventoryPath, new Set([...previous, ...planned.map((p) => p.key)]), signal);

    const applied = new Set<string>();
    for (const p of planned) {
      const path = resourcePath(p.info, namespace, p.object.metadata.name);
      try {
        const owner = await this.liveOwner(path, signal);
        if (owner !== undefined && owner !== group.id) {
          errors.push(`${p.object.kind} ${namespace}/${p.object.metadata.name}: not applied: ${owner === "" ? "it exists and belongs to no inventory" : `it belongs to inventory ${owner}`} (inventory policy must_match)`);
          continue;
        }
        await kube.json("PATCH", path, {
          query: { fieldManager: FIELD_MANAGER, force: "true" },
          contentType: "application/apply-patch+yaml",
          body: p.object,
          signal: this.signal(signal),
        });
        applied.add(p.key);
      } catch (error) {
        signal.throwIfAborted();
        errors.push(`${p.object.kind} ${namespace}/${p.object.metadata.name}: ${(error as Error).message}`);
        // An object that failed stays recorded if it was: it may still exist.
        if (previous.has(p.key)) applied.add(p.key);
      }
    }

    // Prune what the inventory recorded and the config no longer holds.
    const wanted = new Set(planned.map((p) => p.key));
    const kept = new Set(applied);
    for (const key of previous) {
      if (wanted.has(key)) continue;
      try {
        await this.prune(key, group.id, signal);
      } catch (error) {
        signal.throwIfAborted();
        errors.push(`pruning ${key}: ${(error as Error).message}`);
        kept.add(key);
      }
    }
    await this.writeInventory(group, inventoryPath, kept, signal);
    return errors;
  }

  /** The keys an inventory ConfigMap records; none when it does not exist. */
  private async readInventory(path: string, id: string, signal: AbortSignal): Promise<Set<string>> {
    let live: { metadata?: { labels?: Record<string, string> }; data?: Record<string, string> };
    try {
      live = await this.options.kube.json("GET", path, { signal: this.signal(signal) });
    } catch (error) {
      if (isNotFound(error)) return new Set();
      throw error;
    }
    const liveId = live.metadata?.labels?.["cli-utils.sigs.k8s.io/inventory-id"];
    if (liveId !== id) throw new Error(`the inventory ConfigMap exists with inventory id ${JSON.stringify(liveId ?? null)}, not ${id}`);
    return new Set(Object.keys(live.data ?? {}));
  }

  private async writeInventory(group: InventoryGroup, path: string, keys: Set<string>, signal: AbortSignal): Promise<void> {
    const data: Record<string, string> = {};
    for (const key of [...keys].sort()) data[key] = "";
    await this.options.kube.json("PATCH", path, {
      query: { fieldManager: FIELD_MANAGER, force: "true" },
      contentType: "application/apply-patch+yaml",
      body: { ...group.inventory, data },
      signal: this.signal(signal),
    });
  }

  /** The owning inventory of a live object: undefined when it does not exist, "" when it has none. */
  private async liveOwner(path: string, signal: AbortSignal): Promise<string | undefined> {
    try {
      const live = await this.options.kube.json<ManifestObject>("GET", path, { signal: this.signal(signal) });
      return live.metadata?.annotations?.[OWNING_INVENTORY_ANNOTATION] ?? "";
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Deletes one recorded object if this inventory still owns it (cli-utils' prune filter). */
  private async prune(key: string, id: string, signal: AbortSignal): Promise<void> {
    const { group, kind, namespace, name } = parseInventoryKey(key);
    const info = await this.resourceOf(group, kind, signal);
    if (!info) return; // the kind is gone, and its objects with it
    const path = resourcePath(info, namespace, name);
    const owner = await this.liveOwner(path, signal);
    if (owner !== id) return; // gone, or no longer ours: forget it
    try {
      await this.options.kube.json("DELETE", path, {
        body: { apiVersion: "v1", kind: "DeleteOptions", propagationPolicy: "Background" },
        signal: this.signal(signal),
      });
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }

  /** The resource of a kind in a group, at the group's preferred version. */
  private async resourceOf(group: string, kind: string, signal: AbortSignal): Promise<ResourceInfo | undefined> {
    if (group === "") return this.options.mapper.resource("v1", kind, this.signal(signal));
    try {
      const g = await this.options.kube.json<{ preferredVersion?: { groupVersion?: string } }>("GET", `/apis/${encodeURIComponent(group)}`, { signal: this.signal(signal) });
      const gv = g.preferredVersion?.groupVersion;
      return gv ? this.options.mapper.resource(gv, kind, this.signal(signal)) : undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }
}

function bounded(errors: string[]): ApplyErrors {
  if (errors.length === 0) return undefined;
  const text = errors.join("; ");
  return text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS - 1)}…` : text;
}
