/**
 * What the module does in the cluster, as RBAC rules (a ClusterRole: workspace namespaces are
 * created on the fly): namespaces created, read and deleted; Deployments listed and watched in
 * every namespace; the objects GitLab generates for a workspace read, applied (server-side apply
 * is a PATCH that may create), pruned. docs/workspaces.md shows them as YAML.
 */
export const REMOTE_DEVELOPMENT_RBAC_RULES: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }> = [
  { apiGroups: [""], resources: ["namespaces"], verbs: ["get", "create", "delete"] },
  { apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "watch", "create", "patch", "delete"] },
  { apiGroups: [""], resources: ["configmaps", "secrets", "services", "persistentvolumeclaims"], verbs: ["get", "create", "patch", "delete"] },
  { apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: ["get", "create", "patch", "delete"] },
];
