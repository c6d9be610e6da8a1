/**
 * The KUBECONFIG a CI job gets, as GitLab's `Ci::GenerateKubeconfigService` builds it: one cluster
 * `gitlab` whose server is KAS's Kubernetes API proxy, and per allowed agent a user
 * `agent:<agent id>` authenticating with `ci:<agent id>:<job token>` and a context
 * `<config project full path>:<agent name>` (namespace = the authorization's default_namespace
 * when set). Like GitLab's, it sets no `current-context`: the job picks one with
 * `kubectl config use-context`.
 */
import { stringify } from "yaml";

/** The cluster name GitLab uses. */
export const KUBECONFIG_CLUSTER_NAME = "gitlab";

/** One allowed agent, as the kubeconfig needs it. */
export interface KubeconfigAgent {
  agentId: number;
  agentName: string;
  /** Full path of the agent's config project, e.g. "group/project". */
  configProjectPath: string;
  /** The authorization's `default_namespace`; omitted from the context when empty. */
  defaultNamespace?: string;
}

export interface KubeconfigInput {
  /** Where KAS serves the Kubernetes API proxy, e.g. "https://kas.example.com/k8s-proxy". */
  proxyUrl: string;
  jobToken: string;
  agents: readonly KubeconfigAgent[];
}

/** The user name of an agent in the kubeconfig. */
export const kubeconfigUserName = (agentId: number) => `agent:${agentId}`;
/** The context name of an agent in the kubeconfig. */
export const kubeconfigContextName = (configProjectPath: string, agentName: string) => `${configProjectPath}:${agentName}`;
/** The bearer token KAS's proxy accepts from a CI job for one agent. */
export const ciProxyToken = (agentId: number, jobToken: string) => `ci:${agentId}:${jobToken}`;

/** The kubeconfig as a plain object (apiVersion, kind, clusters, users, contexts). */
export function buildKubeconfig(input: KubeconfigInput) {
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: KUBECONFIG_CLUSTER_NAME, cluster: { server: input.proxyUrl } }],
    users: input.agents.map((a) => ({
      name: kubeconfigUserName(a.agentId),
      user: { token: ciProxyToken(a.agentId, input.jobToken) },
    })),
    contexts: input.agents.map((a) => ({
      name: kubeconfigContextName(a.configProjectPath, a.agentName),
      context: {
        cluster: KUBECONFIG_CLUSTER_NAME,
        ...(a.defaultNamespace ? { namespace: a.defaultNamespace } : {}),
        user: kubeconfigUserName(a.agentId),
      },
    })),
  };
}

/**
 * The kubeconfig as YAML, or undefined when there is no agent: GitLab then sets no KUBECONFIG
 * variable at all (`template.valid?` needs a context).
 */
export function generateKubeconfig(input: KubeconfigInput): string | undefined {
  if (input.agents.length === 0) return undefined;
  return stringify(buildKubeconfig(input));
}
