// RBAC pieces of the control plane: the PolicyRule shape, and filling the aggregated ClusterRoles
// once at start.
import type { Kubectl } from "./kubectl.js";

export interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
  verbs: string[];
}

interface ClusterRoleJson {
  metadata: { name: string; labels?: Record<string, string> };
  rules?: PolicyRule[];
  aggregationRule?: { clusterRoleSelectors?: Array<{ matchLabels?: Record<string, string> }> };
}

/**
 * Fills the aggregated ClusterRoles (admin, edit, view, ...) once, as kube-controller-manager's
 * clusterrole-aggregation controller would: unless the control plane runs its controllers,
 * without this `--clusterrole=view` would grant nothing (roles created later are then not
 * aggregated). With the controllers it makes the roles complete before the start returns.
 */
export async function aggregateClusterRoles(kubectl: Kubectl): Promise<void> {
  const roles = (JSON.parse((await kubectl(["get", "clusterroles", "-o", "json"])).stdout) as { items: ClusterRoleJson[] }).items;
  const matches = (role: ClusterRoleJson, sel: Record<string, string>) =>
    Object.entries(sel).every(([k, v]) => role.metadata.labels?.[k] === v);
  const aggregated = roles.filter((r) => r.aggregationRule?.clusterRoleSelectors?.length);
  // Aggregated roles nest (view -> edit -> admin): repeat until nothing changes.
  for (let pass = 0, changed = true; changed && pass < 10; pass++) {
    changed = false;
    for (const role of aggregated) {
      const selectors = role.aggregationRule!.clusterRoleSelectors!;
      const rules: PolicyRule[] = [];
      const seen = new Set<string>();
      for (const source of roles) {
        if (source === role || !selectors.some((sel) => matches(source, sel.matchLabels ?? {}))) continue;
        for (const rule of source.rules ?? []) {
          const key = JSON.stringify(rule);
          if (!seen.has(key)) {
            seen.add(key);
            rules.push(rule);
          }
        }
      }
      if (JSON.stringify(rules) !== JSON.stringify(role.rules ?? [])) {
        role.rules = rules;
        changed = true;
      }
    }
  }
  if (aggregated.length) {
    await kubectl(["replace", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: aggregated.map((r) => ({ apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", ...r })) }) });
  }
}
