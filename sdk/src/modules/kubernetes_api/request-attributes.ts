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
  const lowerMethod = method.toLowerCase() || "get";
  const parsed = parseResourcePath(path);
  if (!parsed) return { verb: lowerMethod, resource: "", namespace: "", name: "" };
  const { group, watchPrefix, namespace, resourceName, name, subresource } = parsed;
  const resource = (group ? `${resourceName}.${group}` : resourceName) + (subresource ? `/${subresource}` : "");
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

/**
 * The path as a low-cardinality route (OpenTelemetry's `http.route`): the namespace and the
 * object's name replaced by `{namespace}` and `{name}`, e.g.
 * `/api/v1/namespaces/{namespace}/pods/{name}/log`. Paths that name no resource keep their first
 * two segments (`/version`, `/openapi/v3/*`).
 */
export function kubernetesRoute(path: string): string {
  const parsed = parseResourcePath(path);
  if (!parsed) {
    const parts = path.split("/").filter(Boolean);
    return `/${parts.slice(0, 2).join("/")}${parts.length > 2 ? "/*" : ""}`;
  }
  const { prefix, watchPrefix, namespace, namespaceObject, resourceName, name, subresource } = parsed;
  let route = `/${prefix.join("/")}${watchPrefix ? "/watch" : ""}`;
  if (namespaceObject) return `${route}/namespaces/{name}`;
  if (namespace) route += "/namespaces/{namespace}";
  route += `/${resourceName}`;
  if (name) route += "/{name}";
  if (subresource) route += `/${subresource}`;
  return route;
}

interface ResourcePath {
  /** ["api", "v1"] or ["apis", group, version]. */
  prefix: string[];
  group: string;
  watchPrefix: boolean;
  namespace: string;
  /** The path is a namespace object itself (`/api/v1/namespaces/<ns>`). */
  namespaceObject: boolean;
  resourceName: string;
  name: string;
  subresource: string | undefined;
}

/** A resource path parsed after k8s.io/apiserver's RequestInfoFactory; undefined for other paths. */
function parseResourcePath(path: string): ResourcePath | undefined {
  const parts = path.split("/").filter(Boolean);
  let rest: string[];
  let prefix: string[];
  let group = "";
  if (parts[0] === "api" && parts.length >= 2) {
    prefix = parts.slice(0, 2);
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 3) {
    group = parts[1]!;
    prefix = parts.slice(0, 3);
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  // The old /watch/ path prefix.
  let watchPrefix = false;
  if (rest[0] === "watch") {
    watchPrefix = true;
    rest = rest.slice(1);
  }
  if (rest.length === 0) return undefined;
  let namespace = "";
  let namespaceObject = false;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1]!;
    rest = rest.slice(2);
  } else if (rest[0] === "namespaces" && rest.length === 2) {
    // A namespace object itself.
    namespace = rest[1]!;
    namespaceObject = true;
  }
  const [resourceName, name = "", subresource] = rest;
  return { prefix, group, watchPrefix, namespace, namespaceObject, resourceName: resourceName!, name, subresource };
}

/** Whether a query string's `watch` parameter asks for a watch ("true" or "1", as Kubernetes reads it). */
export function isWatchQuery(value: string | undefined | null): boolean {
  return value === "true" || value === "1";
}
