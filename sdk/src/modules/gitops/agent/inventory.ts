import { isNotFound, type KubeHttp } from "../../../agent/kube/kube-http.js";

/** On every applied object: the inventory that owns it (cli-utils'). */
export const OWNING_INVENTORY_ANNOTATION = "config.k8s.io/owning-inventory";
/** On the inventory ConfigMap: its id (cli-utils'). */
export const INVENTORY_ID_LABEL = "cli-utils.sigs.k8s.io/inventory-id";

/** cli-utils' object key: `<namespace>_<name>_<group>_<kind>` (namespace empty for cluster-scoped objects). */
export function inventoryKey(group: string, kind: string, namespace: string, name: string): string {
  return `${namespace}_${name}_${group}_${kind}`;
}

/** The parts of an inventoryKey. */
export function parseInventoryKey(key: string): { group: string; kind: string; namespace: string; name: string } {
  // <namespace>_<name>_<group>_<kind>: names and namespaces have no "_", groups and kinds neither.
  const [namespace = "", name = "", group = "", kind = ""] = key.split("_");
  return { namespace, name, group, kind };
}

/** One object an inventory records, with the apiVersion it was applied as (to find it again). */
export interface InventoryEntry {
  key: string;
  apiVersion: string;
}

/**
 * The record of what one agent applied from one manifest project, as GitLab's agent keeps it: a
 * ConfigMap `inventory-<agentId>-<projectId>` in the project's default namespace, labelled
 * `cli-utils.sigs.k8s.io/inventory-id: <agentId>-<projectId>`, one data key per object.
 */
export class Inventory {
  readonly id: string;
  readonly name: string;

  constructor(
    private readonly kube: KubeHttp,
    agentId: bigint | number,
    projectId: bigint | number,
    readonly namespace: string,
  ) {
    this.id = `${agentId}-${projectId}`;
    this.name = `inventory-${this.id}`;
  }

  private get path(): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/configmaps/${encodeURIComponent(this.name)}`;
  }

  /** The recorded objects; none when the inventory does not exist yet. */
  async read(signal: AbortSignal): Promise<InventoryEntry[]> {
    try {
      const cm = await this.kube.json<{ data?: Record<string, string> }>("GET", this.path, { signal });
      return Object.entries(cm.data ?? {}).map(([key, apiVersion]) => ({ key, apiVersion }));
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
  }

  /** Records exactly `entries` (server-side apply as agentk: keys no longer listed go). */
  async write(entries: InventoryEntry[], signal: AbortSignal): Promise<void> {
    const data: Record<string, string> = {};
    for (const e of entries) data[e.key] = e.apiVersion;
    await this.kube.json("PATCH", this.path, {
      query: { fieldManager: "agentk", force: "true" },
      contentType: "application/apply-patch+yaml",
      body: {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: this.name, namespace: this.namespace, labels: { [INVENTORY_ID_LABEL]: this.id } },
        data,
      },
      signal,
    });
  }
}
