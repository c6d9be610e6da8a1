/**
 * A workspace's `config_to_apply`, decoded and grouped by inventory as GitLab's agentk does
 * (gla: remote_development/agent/k8s/client.go groupObjectsByInventory): the inventory objects
 * are those labelled `cli-utils.sigs.k8s.io/inventory-id`; every other object names its inventory
 * in the annotation `config.k8s.io/owning-inventory`. Beyond GitLab, every object must be in the
 * workspace's namespace: the platform cannot make the agent change anything outside it.
 */
import { decodeManifests, ManifestsInvalidError, type ManifestObject } from "../../gitops/agent/manifest-decoder.js";
import { INVENTORY_ID_LABEL, OWNING_INVENTORY_ANNOTATION } from "../../gitops/agent/inventory.js";

/** One inventory ConfigMap and the objects it owns, in the order of the config. */
export interface InventoryGroup {
  inventory: ManifestObject;
  /** The inventory's id (its label), which owned objects' annotation must match. */
  id: string;
  objects: ManifestObject[];
}

/** A config_to_apply the agent refuses: nothing of it is applied. */
export class WorkspaceConfigError extends Error {
  override readonly name = "WorkspaceConfigError";
}

export function groupByInventory(config: string, namespace: string): InventoryGroup[] {
  let objects: ManifestObject[];
  try {
    objects = decodeManifests([{ source: "config_to_apply", data: new TextEncoder().encode(config) }]).map((d) => d.object);
  } catch (error) {
    if (error instanceof ManifestsInvalidError) throw new WorkspaceConfigError(error.message);
    throw error;
  }
  const describe = (o: ManifestObject) => `${o.kind} ${o.metadata.name}`;
  for (const o of objects) {
    const ns = o.metadata.namespace;
    if (ns !== undefined && ns !== "" && ns !== namespace) throw new WorkspaceConfigError(`${describe(o)} is in namespace ${ns}, not the workspace's namespace ${namespace}`);
    o.metadata.namespace = namespace;
  }
  const groups = new Map<string, InventoryGroup>();
  for (const o of objects) {
    const id = o.metadata.labels?.[INVENTORY_ID_LABEL];
    if (id === undefined) continue;
    if (o.kind !== "ConfigMap" || o.apiVersion !== "v1") throw new WorkspaceConfigError(`${describe(o)} has the label ${INVENTORY_ID_LABEL} but an inventory must be a v1 ConfigMap`);
    if (groups.has(o.metadata.name)) throw new WorkspaceConfigError(`inventory ${o.metadata.name} is defined twice`);
    groups.set(o.metadata.name, { inventory: o, id, objects: [] });
  }
  if (groups.size === 0) throw new WorkspaceConfigError("no inventory found: config_to_apply has no ConfigMap labelled " + INVENTORY_ID_LABEL);
  for (const o of objects) {
    if (o.metadata.labels?.[INVENTORY_ID_LABEL] !== undefined) continue;
    const owner = o.metadata.annotations?.[OWNING_INVENTORY_ANNOTATION];
    if (owner === undefined) throw new WorkspaceConfigError(`no owning inventory found: ${describe(o)} has no annotation ${OWNING_INVENTORY_ANNOTATION}`);
    const group = groups.get(owner);
    if (!group) throw new WorkspaceConfigError(`${describe(o)} names inventory ${owner}, which config_to_apply does not define`);
    // cli-utils marks what it applies with the inventory's id (GitLab's generator names both alike).
    o.metadata.annotations = { ...o.metadata.annotations, [OWNING_INVENTORY_ANNOTATION]: group.id };
    group.objects.push(o);
  }
  return [...groups.values()];
}
