/**
 * The Kubernetes objects agentk creates for a Flux GitRepository that points at the platform, as
 * GitLab's agent does (names, annotations, owner reference, Receiver spec), and how such a
 * GitRepository is recognised. Pure functions: the controller applies what they return.
 */

export const GIT_REPOSITORY_API_VERSION = "source.toolkit.fluxcd.io/v1";
export const RECEIVER_API_VERSION = "notification.toolkit.fluxcd.io/v1";
/** The CRDs the Flux module needs (both served at v1 and Established). */
export const GIT_REPOSITORIES_CRD = "gitrepositories.source.toolkit.fluxcd.io";
export const RECEIVERS_CRD = "receivers.notification.toolkit.fluxcd.io";
export const FLUX_CRD_VERSION = "v1";

export const MANAGED_BY_ANNOTATION = "app.kubernetes.io/managed-by";
export const AGENT_ID_ANNOTATION = "agent.gitlab.com/id";
/** On Receivers: the full path of the project whose pushes trigger it. */
export const PROJECT_ANNOTATION = "agent.gitlab.com/project";

/** Longest Secret name (a DNS subdomain). */
const SECRET_NAME_MAX = 253;
/** Longest Receiver name (Flux's limit for its objects). */
const RECEIVER_NAME_MAX = 63;

/** The parts of a Kubernetes object the module reads. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid?: string; controller?: boolean }>;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}

/**
 * `gitlab-<suffix>`, cut to `max` characters; a cut that ends on a character other than a letter
 * or digit ends in "-x" instead (Kubernetes names must end alphanumerically).
 */
export function gitlabName(suffix: string, max: number): string {
  const name = `gitlab-${suffix}`;
  if (name.length <= max) return name;
  const cut = name.slice(0, max);
  return /[a-z0-9]$/i.test(cut) ? cut : `${cut.slice(0, max - 2)}-x`;
}

export const receiverSecretName = (repositoryName: string) => gitlabName(`receiver-${repositoryName}`, SECRET_NAME_MAX);
export const receiverName = (repositoryName: string) => gitlabName(repositoryName, RECEIVER_NAME_MAX);
/** The Secret name of agents before GitLab 16.3, deleted when it is this agent's. */
export const legacySecretName = (repositoryName: string) => gitlabName(repositoryName, SECRET_NAME_MAX);

/**
 * The project full path of a GitRepository URL on the platform's host (`https://host/group/proj.git`
 * -> `group/proj`), or undefined when the URL is on another host or is not a URL (scp-style
 * `git@host:path` is not one: use `ssh://`).
 */
export function projectPathOf(repositoryUrl: unknown, gitlabHostname: string): string | undefined {
  if (typeof repositoryUrl !== "string") return undefined;
  let url: URL;
  try {
    url = new URL(repositoryUrl);
  } catch {
    return undefined;
  }
  if (url.hostname.toLowerCase() !== gitlabHostname.toLowerCase()) return undefined;
  const path = decodeURIComponent(url.pathname).replace(/^\//, "").replace(/\.git$/, "");
  return path === "" ? undefined : path;
}

function ownerReference(repository: KubeObject) {
  return {
    apiVersion: GIT_REPOSITORY_API_VERSION,
    kind: "GitRepository",
    name: repository.metadata!.name!,
    uid: repository.metadata!.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** The (empty) webhook token Secret of a GitRepository's Receiver. */
export function receiverSecret(repository: KubeObject, agentId: bigint | number) {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: receiverSecretName(repository.metadata!.name!),
      namespace: repository.metadata!.namespace!,
      annotations: { [MANAGED_BY_ANNOTATION]: "gitlab", [AGENT_ID_ANNOTATION]: String(agentId) },
      ownerReferences: [ownerReference(repository)],
    },
    data: { token: "" },
  };
}

/** The generic Receiver that makes Flux reconcile `repository` when agentk POSTs its webhook path. */
export function receiver(repository: KubeObject, agentId: bigint | number, projectPath: string) {
  const name = repository.metadata!.name!;
  return {
    apiVersion: RECEIVER_API_VERSION,
    kind: "Receiver",
    metadata: {
      name: receiverName(name),
      namespace: repository.metadata!.namespace!,
      annotations: {
        [MANAGED_BY_ANNOTATION]: "gitlab",
        [AGENT_ID_ANNOTATION]: String(agentId),
        [PROJECT_ANNOTATION]: projectPath,
      },
      ownerReferences: [ownerReference(repository)],
    },
    spec: {
      type: "generic",
      interval: "5m",
      resources: [{ kind: "GitRepository", name, namespace: repository.metadata!.namespace! }],
      secretRef: { name: receiverSecretName(name) },
    },
  };
}

/** `ns/name` of the GitRepository that controls `object` (a Receiver), if any. */
export function owningRepositoryKey(object: KubeObject): string | undefined {
  const owner = object.metadata?.ownerReferences?.find(
    (o) => o.controller && o.kind === "GitRepository" && o.apiVersion.split("/")[0] === "source.toolkit.fluxcd.io",
  );
  return owner && object.metadata?.namespace ? `${object.metadata.namespace}/${owner.name}` : undefined;
}
