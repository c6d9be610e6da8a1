// The agent's identity in the test cluster: a real ServiceAccount that may impersonate (what
// the Kubernetes API proxy needs) plus the caller's extra rules, authenticated by a TokenRequest
// token, as a GitLab agent runs in a real cluster.
import { join } from "node:path";
import { applyObjects, type Kubectl } from "./kubectl.js";
import { writeKubeconfig } from "./kubeconfig.js";
import type { PolicyRule } from "./rbac.js";

export const AGENT_NAMESPACE = "gitlab-agent";
export const AGENT_SERVICE_ACCOUNT = "gitlab-agent";
export const AGENT_USERNAME = `system:serviceaccount:${AGENT_NAMESPACE}:${AGENT_SERVICE_ACCOUNT}`;

const IMPERSONATE_RULES: PolicyRule[] = [
  { apiGroups: [""], resources: ["users", "groups", "serviceaccounts"], verbs: ["impersonate"] },
  { apiGroups: ["authentication.k8s.io"], resources: ["userextras/*", "uids"], verbs: ["impersonate"] },
];

export interface AgentIdentity {
  token: string;
  kubeconfigPath: string;
}

/** Creates the agent's ServiceAccount and RBAC, a 48 h token, and `<dir>/agent.kubeconfig`. */
export async function createAgentIdentity(
  kubectl: Kubectl,
  cluster: { dir: string; apiServerUrl: string; caCertPath: string; agentRules?: PolicyRule[] },
): Promise<AgentIdentity> {
  await applyObjects(kubectl, [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: AGENT_NAMESPACE } },
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: AGENT_SERVICE_ACCOUNT, namespace: AGENT_NAMESPACE } },
    ...clusterRoleFor("gitlab-agent-impersonate", IMPERSONATE_RULES),
    ...(cluster.agentRules?.length ? clusterRoleFor("gitlab-agent-extra", cluster.agentRules) : []),
  ]);
  const token = (await kubectl(["create", "token", AGENT_SERVICE_ACCOUNT, "-n", AGENT_NAMESPACE, "--duration=48h"])).stdout.trim();
  const kubeconfigPath = await writeKubeconfig(join(cluster.dir, "agent.kubeconfig"), cluster.apiServerUrl, cluster.caCertPath, AGENT_SERVICE_ACCOUNT, { token });
  return { token, kubeconfigPath };
}

/** A ClusterRole with these rules and its binding to the agent's ServiceAccount. */
function clusterRoleFor(name: string, rules: PolicyRule[]): object[] {
  return [
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name }, rules },
    {
      apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRoleBinding", metadata: { name },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name },
      subjects: [{ kind: "ServiceAccount", name: AGENT_SERVICE_ACCOUNT, namespace: AGENT_NAMESPACE }],
    },
  ];
}
