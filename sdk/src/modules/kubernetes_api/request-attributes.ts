/** What a Kubernetes API request does, as Kubernetes' audit log and RBAC name it. */
export interface KubernetesRequestAttributes {
  /** get, list, watch, create, update, patch, delete, deletecollection, connect; or the lower-case HTTP method for non-resource paths. */
  verb: string;
  /** e.g. "pods", "deployments.apps", "pods/log"; "" for non-resource paths (/version, /healthz). */
  resource: string;
  /** "" when cluster-scoped or not a resource request. */
  namespace: string;
  /** The object's name, "" for collections. */
  name: string;
}

/**
 * Kubernetes' request attributes of `method` on `path` (without the query), after
 * k8s.io/apiserver's RequestInfoFactory: `/api/v1/...` and `/apis/<group>/<version>/...`,
 * `namespaces/<ns>/<resource>[/<name>[/<subresource>]]`. `upgrade` (exec, attach, port-forward)
 * and the `watch` query make `connect` and `watch`.
 */
export function kubernetesRequestAttributes(method: string, path: string, query: { watch?: boolean; upgrade?: boolean } = {}): KubernetesRequestAttributes {
  const parts = path.split("/").filter(Boolean);
  const lowerMethod = method.toLowerCase() || "get";
  let rest: string[];
  let group = "";
  if (parts[0] === "api" && parts.length >= 2) {
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 3) {
    group = parts[1]!;
    rest = parts.slice(3);
  } else {
    return { verb: lowerMethod, resource: "", namespace: "", name: "" };
  }
  // The old /watch/ path prefix.
  let watchPrefix = false;
  if (rest[0] === "watch") {
    watchPrefix = true;
    rest = rest.slice(1);
  }
  if (rest.length === 0) return { verb: lowerMethod, resource: "", namespace: "", name: "" };
  let namespace = "";
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1]!;
    rest = rest.slice(2);
  } else if (rest[0] === "namespaces" && rest.length === 2) {
    // A namespace object itself.
    namespace = rest[1]!;
  }
  const [resourceName, name = "", subresource] = rest;
  const resource = (group ? `${resourceName}.${group}` : resourceName!) + (subresource ? `/${subresource}` : "");
  const collection = name === "";
  let verb: string;
  if (query.upgrade) verb = "connect";
  else if (watchPrefix || (query.watch && (lowerMethod === "get" || lowerMethod === "head"))) verb = "watch";
  else if (lowerMethod === "get" || lowerMethod === "head") verb = collection ? "list" : "get";
  else if (lowerMethod === "post") verb = "create";
  else if (lowerMethod === "put") verb = "update";
  else if (lowerMethod === "patch") verb = "patch";
  else if (lowerMethod === "delete") verb = collection ? "deletecollection" : "delete";
  else verb = lowerMethod;
  return { verb, resource, namespace, name };
}

/** Whether a query string's `watch` parameter asks for a watch ("true" or "1", as Kubernetes reads it). */
export function isWatchQuery(value: string | undefined | null): boolean {
  return value === "true" || value === "1";
}
