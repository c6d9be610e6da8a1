/**
 * The body of the agent's `PUT …/modules/starboard_vulnerability/`, checked with GitLab's
 * parameter rules (ee/lib/ee/api/internal/kubernetes.rb): required keys, strings where strings
 * are due, every problem named the way Grape names it (`vulnerability[location][image] is
 * missing`). Severity and confidence are lower-cased, as GitLab coerces them.
 */

export interface StarboardReport {
  vulnerability: {
    name: string;
    severity: string;
    confidence?: string;
    message?: string;
    description?: string;
    solution?: string;
    identifiers: Array<{ type: string; name: string; value?: string; url?: string }>;
    links: Array<{ url: string; name?: string }>;
    location: {
      image: string;
      operating_system?: string;
      dependency: { package: { name: string }; version?: string };
      kubernetes_resource: { namespace: string; name: string; kind: string; container_name: string; agent_id: string; container?: string };
    };
  };
  scanner: { id: string; name: string; vendor: { name: string }; version?: string };
}

/** What is wrong with a report, all at once: `a is missing, b is invalid`. */
export class ReportParamsError extends Error {
  override readonly name = "ReportParamsError";
}

/** GitLab's severities and confidences (Enums::Vulnerability). */
export const SEVERITIES = ["critical", "high", "medium", "low", "info", "unknown"] as const;
export const CONFIDENCES = ["confirmed", "high", "medium", "low", "experimental", "ignore", "unknown"] as const;

type Json = Record<string, unknown>;

/** Parses and checks a report body; throws ReportParamsError naming every problem. */
export function parseStarboardReport(body: Uint8Array): StarboardReport {
  const { problems, p, root } = parseBody(body);
  const v = p.requiredHash(root, "vulnerability");
  const location = p.requiredHash(v, "vulnerability[location]", "location");
  const dependency = p.requiredHash(location, "vulnerability[location][dependency]", "dependency");
  const pkg = p.requiredHash(dependency, "vulnerability[location][dependency][package]", "package");
  const k8s = p.requiredHash(location, "vulnerability[location][kubernetes_resource]", "kubernetes_resource");
  const scanner = p.requiredHash(root, "scanner");
  const vendor = p.requiredHash(scanner, "scanner[vendor]", "vendor");
  const identifiers = p.requiredArray(v, "vulnerability[identifiers]", "identifiers").map((item, i) => {
    const id = p.hash(item, `vulnerability[identifiers][${i}]`);
    return {
      type: p.requiredString(id, `vulnerability[identifiers][${i}][type]`, "type"),
      name: p.requiredString(id, `vulnerability[identifiers][${i}][name]`, "name"),
      value: p.optionalString(id, `vulnerability[identifiers][${i}][value]`, "value"),
      url: p.optionalString(id, `vulnerability[identifiers][${i}][url]`, "url"),
    };
  });
  if (v && Array.isArray(v.identifiers) && v.identifiers.length === 0) problems.push("vulnerability[identifiers] is empty");
  const links = (p.optionalArray(v, "vulnerability[links]", "links") ?? []).map((item, i) => {
    const link = p.hash(item, `vulnerability[links][${i}]`);
    return { url: p.requiredString(link, `vulnerability[links][${i}][url]`, "url"), name: p.optionalString(link, `vulnerability[links][${i}][name]`, "name") };
  });
  const severity = p.requiredString(v, "vulnerability[severity]", "severity").toLowerCase();
  if (v?.severity !== undefined && typeof v.severity === "string" && !(SEVERITIES as readonly string[]).includes(severity)) {
    problems.push(`vulnerability[severity] does not have a valid value (${SEVERITIES.join(", ")})`);
  }
  const confidence = p.optionalString(v, "vulnerability[confidence]", "confidence")?.toLowerCase();
  if (confidence !== undefined && !(CONFIDENCES as readonly string[]).includes(confidence)) {
    problems.push(`vulnerability[confidence] does not have a valid value (${CONFIDENCES.join(", ")})`);
  }
  const report: StarboardReport = {
    vulnerability: {
      name: p.requiredString(v, "vulnerability[name]", "name"),
      severity,
      confidence,
      message: p.optionalString(v, "vulnerability[message]", "message"),
      description: p.optionalString(v, "vulnerability[description]", "description"),
      solution: p.optionalString(v, "vulnerability[solution]", "solution"),
      identifiers,
      links,
      location: {
        image: p.requiredString(location, "vulnerability[location][image]", "image"),
        operating_system: p.optionalString(location, "vulnerability[location][operating_system]", "operating_system"),
        dependency: {
          package: { name: p.requiredString(pkg, "vulnerability[location][dependency][package][name]", "name") },
          version: p.optionalString(dependency, "vulnerability[location][dependency][version]", "version"),
        },
        kubernetes_resource: {
          namespace: p.requiredString(k8s, "vulnerability[location][kubernetes_resource][namespace]", "namespace"),
          name: p.requiredString(k8s, "vulnerability[location][kubernetes_resource][name]", "name"),
          kind: p.requiredString(k8s, "vulnerability[location][kubernetes_resource][kind]", "kind"),
          container_name: p.requiredString(k8s, "vulnerability[location][kubernetes_resource][container_name]", "container_name"),
          agent_id: p.requiredString(k8s, "vulnerability[location][kubernetes_resource][agent_id]", "agent_id"),
          container: p.optionalString(k8s, "vulnerability[location][kubernetes_resource][container]", "container"),
        },
      },
    },
    scanner: {
      id: p.requiredString(scanner, "scanner[id]", "id"),
      name: p.requiredString(scanner, "scanner[name]", "name"),
      vendor: { name: p.requiredString(vendor, "scanner[vendor][name]", "name") },
      version: p.optionalString(scanner, "scanner[version]", "version"),
    },
  };
  if (problems.length > 0) throw new ReportParamsError(problems.join(", "));
  return report;
}

/** The body of `POST …/scan_result`: `uuids` (GitLab's) and kasbridge's optional `namespaces`. */
export function parseScanResult(body: Uint8Array): { uuids: string[]; namespaces?: string[] } {
  const { problems, p, root } = parseBody(body);
  const uuids = p.requiredArray(root, "uuids", "uuids").map((u, i) => (typeof u === "string" ? u : (problems.push(`uuids[${i}] is invalid`), "")));
  const namespaces = p.optionalArray(root, "namespaces", "namespaces")?.map((n, i) => (typeof n === "string" ? n : (problems.push(`namespaces[${i}] is invalid`), "")));
  if (problems.length > 0) throw new ReportParamsError(problems.join(", "));
  return namespaces === undefined ? { uuids } : { uuids, namespaces };
}

/** The body as a JSON object, with the checks that collect its problems. */
function parseBody(body: Uint8Array): { problems: string[]; p: Params; root: Json | undefined } {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body).toString("utf8"));
  } catch {
    throw new ReportParamsError("the body is not JSON");
  }
  const problems: string[] = [];
  const p = new Params(problems);
  return { problems, p, root: p.hash(json, "") };
}

/** Grape-style checks that collect problems instead of stopping at the first. */
class Params {
  constructor(private readonly problems: string[]) {}

  hash(value: unknown, path: string): Json | undefined {
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Json;
    this.problems.push(path === "" ? "the body must be a JSON object" : `${path} is invalid`);
    return undefined;
  }

  requiredHash(parent: Json | undefined, path: string, key = path): Json | undefined {
    if (!parent) return undefined;
    if (parent[key] === undefined || parent[key] === null) {
      this.problems.push(`${path} is missing`);
      return undefined;
    }
    return this.hash(parent[key], path);
  }

  requiredArray(parent: Json | undefined, path: string, key: string): unknown[] {
    if (!parent) return [];
    if (parent[key] === undefined || parent[key] === null) {
      this.problems.push(`${path} is missing`);
      return [];
    }
    return this.array(parent[key], path);
  }

  optionalArray(parent: Json | undefined, path: string, key: string): unknown[] | undefined {
    if (!parent || parent[key] === undefined || parent[key] === null) return undefined;
    return this.array(parent[key], path);
  }

  requiredString(parent: Json | undefined, path: string, key: string): string {
    if (!parent) return "";
    if (parent[key] === undefined || parent[key] === null) {
      this.problems.push(`${path} is missing`);
      return "";
    }
    return this.string(parent[key], path);
  }

  optionalString(parent: Json | undefined, path: string, key: string): string | undefined {
    if (!parent || parent[key] === undefined || parent[key] === null) return undefined;
    return this.string(parent[key], path);
  }

  private array(value: unknown, path: string): unknown[] {
    if (Array.isArray(value)) return value;
    this.problems.push(`${path} is invalid`);
    return [];
  }

  private string(value: unknown, path: string): string {
    // Grape coerces numbers to String params.
    if (typeof value === "string") return value;
    if (typeof value === "number") return String(value);
    this.problems.push(`${path} is invalid`);
    return "";
  }
}
