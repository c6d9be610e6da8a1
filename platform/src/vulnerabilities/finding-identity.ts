/**
 * GitLab's identity of an operational container scanning finding, so a rescan finds the same
 * finding instead of adding one (ee: StarboardVulnerabilityCreateService, CreateServiceBase):
 *
 * - location fingerprint: SHA-1 of `<agent id>:<namespace>:<kind>:<name>:<container>:<package>`.
 *   GitLab reads `kubernetes_resource.container`, which the agent never sends (it sends
 *   `container_name`), so that part is always empty;
 * - primary identifier fingerprint: SHA-1 of `<external type>:<external id>`, where the type is
 *   guessed from the identifier's name ("cve", "cwe" or "other": the agent's `type` is not read)
 *   and the id is the name;
 * - finding UUID: a version-5 UUID of `<report type>-<identifier fp>-<location fp>-<project id>`
 *   in GitLab's production namespace, the report type being the enum value of
 *   cluster_image_scanning (7).
 */
import { createHash } from "node:crypto";

/** GitLab's `vulnerabilities.report_type` enum value of cluster_image_scanning. */
export const CLUSTER_IMAGE_SCANNING_REPORT_TYPE_VALUE = 7;
/** Gitlab::UUID's namespace in production (lib/gitlab/uuid.rb). */
export const GITLAB_UUID_NAMESPACE = "58dc0f06-936c-43b3-93bb-71693f1b6570";

export function sha1Hex(text: string): string {
  return createHash("sha1").update(text, "utf8").digest("hex");
}

export function locationFingerprint(agentId: number, resource: { namespace: string; kind: string; name: string; container?: string }, packageName: string): string {
  return sha1Hex([agentId, resource.namespace, resource.kind, resource.name, resource.container ?? "", packageName].join(":"));
}

/** `map_external_type_from_name`: what GitLab calls an identifier it gets without an external type. */
export function externalTypeOf(name: string): "cve" | "cwe" | "other" {
  return /CVE/i.test(name) ? "cve" : /CWE/i.test(name) ? "cwe" : "other";
}

export function identifierFingerprint(externalType: string, externalId: string): string {
  return sha1Hex(`${externalType}:${externalId}`);
}

export function findingUuid(primaryIdentifierFingerprint: string, locationFp: string, projectId: number): string {
  return uuidV5(`${CLUSTER_IMAGE_SCANNING_REPORT_TYPE_VALUE}-${primaryIdentifierFingerprint}-${locationFp}-${projectId}`, GITLAB_UUID_NAMESPACE);
}

/** RFC 4122 version 5 (SHA-1, name-based) UUID, as Ruby's Digest::UUID.uuid_v5. */
export function uuidV5(name: string, namespace: string): string {
  const ns = Buffer.from(namespace.replace(/-/g, ""), "hex");
  const bytes = createHash("sha1").update(ns).update(name, "utf8").digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
