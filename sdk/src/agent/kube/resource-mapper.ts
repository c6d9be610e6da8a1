import { isNotFound, type KubeHttp } from "./kube-http.js";

/** Where objects of one kind live in the API. */
export interface ResourceInfo {
  group: string;
  version: string;
  kind: string;
  /** The resource name in URLs, e.g. "deployments". */
  plural: string;
  namespaced: boolean;
}

/**
 * apiVersion + kind -> resource (a REST mapper): the API server's discovery document of each
 * group version, cached; a kind it does not know yet (a CRD created meanwhile) re-reads it once.
 */
export class ResourceMapper {
  private readonly groupVersions = new Map<string, Promise<Map<string, ResourceInfo>>>();

  constructor(private readonly kube: KubeHttp) {}

  /** The resource of `kind` in `apiVersion`; undefined when the API server serves no such kind. */
  async resource(apiVersion: string, kind: string, signal?: AbortSignal): Promise<ResourceInfo | undefined> {
    const cached = this.groupVersions.get(apiVersion);
    if (cached) {
      const hit = (await cached.catch(() => undefined))?.get(kind);
      if (hit) return hit;
    }
    const fresh = this.discover(apiVersion, signal);
    this.groupVersions.set(apiVersion, fresh);
    return (await fresh).get(kind);
  }

  /** Forgets what is cached (CRDs were created or deleted). */
  reset(): void {
    this.groupVersions.clear();
  }

  private async discover(apiVersion: string, signal?: AbortSignal): Promise<Map<string, ResourceInfo>> {
    const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/", 2) as [string, string]) : ["", apiVersion];
    const path = group === "" ? `/api/${version}` : `/apis/${group}/${version}`;
    const kinds = new Map<string, ResourceInfo>();
    let list: { resources?: Array<{ name: string; kind: string; namespaced: boolean }> };
    try {
      list = await this.kube.json("GET", path, { signal });
    } catch (err) {
      if (isNotFound(err)) return kinds;
      this.groupVersions.delete(apiVersion);
      throw err;
    }
    for (const r of list.resources ?? []) {
      if (r.name.includes("/")) continue; // subresources
      kinds.set(r.kind, { group, version, kind: r.kind, plural: r.name, namespaced: r.namespaced });
    }
    return kinds;
  }
}

/** The URL path of an object (or, without `name`, of its collection). */
export function resourcePath(info: ResourceInfo, namespace: string | undefined, name?: string): string {
  const base = info.group === "" ? `/api/${info.version}` : `/apis/${info.group}/${info.version}`;
  const ns = info.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : "";
  return `${base}${ns}/${info.plural}${name === undefined ? "" : `/${encodeURIComponent(name)}`}`;
}
