/**
 * Vulnerabilities from operational container scanning, as GitLab keeps them: one per finding
 * (its UUID, see finding-identity.ts) per project, reported by an agent's scans, resolved by the
 * agent's scan results when a scan no longer sees them, and confirmed, dismissed, resolved or
 * reverted by users. Also the scans users ask for, which the agent's leader picks up.
 */
import type { Knex } from "knex";
import { fromDbBool, fromDbTime, fromDbTimeOrNull, isUniqueViolation, toDbTime } from "../store/db-util.js";
import type { Agent } from "../services/agents.js";
import { inTransaction, type ServiceContext } from "../services/context.js";
import { invalid } from "../services/errors.js";
import { externalTypeOf, findingUuid, identifierFingerprint, locationFingerprint, sha1Hex } from "./finding-identity.js";
import type { StarboardReport } from "./starboard-report.js";

export const REPORT_TYPE = "cluster_image_scanning";
export const METADATA_VERSION = "cluster_image_scanning:1.0";
/** GitLab's Issuable::TITLE_LENGTH_MAX. */
const TITLE_MAX = 255;
/** GitLab resolves in batches of 250. */
const RESOLVE_BATCH = 250;

export type VulnerabilityState = "detected" | "confirmed" | "resolved" | "dismissed";
export const STATES: readonly VulnerabilityState[] = ["detected", "confirmed", "resolved", "dismissed"];
/** GitLab's Vulnerability::ACTIVE_STATES: what a scan result may resolve. */
export const ACTIVE_STATES: readonly VulnerabilityState[] = ["detected", "confirmed"];
/** Severities from the most to the least severe (the list's order). */
export const SEVERITY_ORDER = ["critical", "high", "medium", "low", "info", "unknown"] as const;

export interface VulnerabilityIdentifier {
  external_type: string;
  external_id: string;
  name: string;
  url: string | null;
  fingerprint: string;
}

export interface Vulnerability {
  id: number;
  projectId: number;
  clusterAgentId: number | null;
  findingUuid: string;
  reportType: string;
  state: VulnerabilityState;
  severity: string;
  confidence: string;
  title: string;
  message: string;
  description: string;
  solution: string;
  locationFingerprint: string;
  primaryIdentifierFingerprint: string;
  projectFingerprint: string;
  metadataVersion: string;
  kubernetesResource: { namespace: string; kind: string; name: string };
  location: StarboardReport["vulnerability"]["location"];
  identifiers: VulnerabilityIdentifier[];
  links: Array<{ url: string; name?: string }>;
  scanner: { external_id: string; name: string; vendor: string; version: string | null };
  authorId: number | null;
  resolvedOnDefaultBranch: boolean;
  createdAt: Date;
  updatedAt: Date;
  lastDetectedAt: Date;
  confirmedAt: Date | null;
  confirmedById: number | null;
  resolvedAt: Date | null;
  resolvedById: number | null;
  dismissedAt: Date | null;
  dismissedById: number | null;
}

export interface VulnerabilityFilters {
  severities?: string[];
  states?: string[];
  clusterAgentIds?: number[];
  reportTypes?: string[];
}

/** A user's state change: GitLab's confirm, dismiss, resolve and revert (to detected). */
export type StateAction = "confirm" | "dismiss" | "resolve" | "revert";
const ACTION_STATE: Record<StateAction, VulnerabilityState> = { confirm: "confirmed", dismiss: "dismissed", resolve: "resolved", revert: "detected" };

export interface ScanRequest {
  id: number;
  agentId: number;
  namespaces: string[];
  requestedById: number | null;
  requestedAt: Date;
  pickedUpAt: Date | null;
}

export interface VulnerabilityService {
  /**
   * Records what an agent's scan found (GitLab's idempotent PUT): the finding's UUID when it is
   * new, or the existing one's unchanged, except that one a scan had resolved is detected again.
   */
  reportFromAgent(agent: Agent, report: StarboardReport): Promise<{ vulnerability: Vulnerability; created: boolean; reopened: boolean }>;
  /**
   * Resolves the agent's active findings that a scan did not report (`uuids`), in `namespaces`
   * only when given (kasbridge's extension; GitLab resolves in every namespace). Returns how many.
   */
  resolveUndetected(agent: Agent, uuids: readonly string[], namespaces?: readonly string[]): Promise<number>;
  /** A project's vulnerabilities, most severe first, then newest first. */
  list(projectId: number, filters?: VulnerabilityFilters): Promise<Vulnerability[]>;
  get(id: number): Promise<Vulnerability | undefined>;
  /** A user's state change; `changed: false` when it was in that state already (GitLab answers 304). */
  transition(id: number, action: StateAction, userId: number, comment?: string): Promise<{ vulnerability: Vulnerability; changed: boolean }>;
  /** Counts of every project's vulnerabilities by severity and state (metrics). */
  countBySeverityAndState(): Promise<Array<{ severity: string; state: string; count: number }>>;
  /** Asks the agent's leader for a scan (of `namespaces`, or of every configured one when empty). */
  requestScan(agentId: number, namespaces: readonly string[], userId: number | null): Promise<ScanRequest>;
  /** The agent's pending scan requests, marked picked up (the agent asks for them). */
  takeScanRequests(agentId: number): Promise<ScanRequest[]>;
  listScanRequests(agentId: number): Promise<ScanRequest[]>;
}

interface VulnerabilityRow {
  id: number;
  project_id: number;
  cluster_agent_id: number | null;
  finding_uuid: string;
  report_type: string;
  state: string;
  severity: string;
  confidence: string;
  title: string;
  message: string;
  description: string;
  solution: string;
  location_fingerprint: string;
  primary_identifier_fingerprint: string;
  project_fingerprint: string;
  metadata_version: string;
  k8s_namespace: string;
  k8s_kind: string;
  k8s_name: string;
  location: string;
  identifiers: string;
  links: string;
  scanner: string;
  author_id: number | null;
  resolved_on_default_branch: unknown;
  created_at: unknown;
  updated_at: unknown;
  last_detected_at: unknown;
  confirmed_at: unknown;
  confirmed_by_id: number | null;
  resolved_at: unknown;
  resolved_by_id: number | null;
  dismissed_at: unknown;
  dismissed_by_id: number | null;
}

function fromRow(r: VulnerabilityRow): Vulnerability {
  return {
    id: r.id,
    projectId: r.project_id,
    clusterAgentId: r.cluster_agent_id,
    findingUuid: r.finding_uuid,
    reportType: r.report_type,
    state: r.state as VulnerabilityState,
    severity: r.severity,
    confidence: r.confidence,
    title: r.title,
    message: r.message,
    description: r.description,
    solution: r.solution,
    locationFingerprint: r.location_fingerprint,
    primaryIdentifierFingerprint: r.primary_identifier_fingerprint,
    projectFingerprint: r.project_fingerprint,
    metadataVersion: r.metadata_version,
    kubernetesResource: { namespace: r.k8s_namespace, kind: r.k8s_kind, name: r.k8s_name },
    location: JSON.parse(r.location) as Vulnerability["location"],
    identifiers: JSON.parse(r.identifiers) as VulnerabilityIdentifier[],
    links: JSON.parse(r.links) as Vulnerability["links"],
    scanner: JSON.parse(r.scanner) as Vulnerability["scanner"],
    authorId: r.author_id,
    resolvedOnDefaultBranch: fromDbBool(r.resolved_on_default_branch),
    createdAt: fromDbTime(r.created_at),
    updatedAt: fromDbTime(r.updated_at),
    lastDetectedAt: fromDbTime(r.last_detected_at),
    confirmedAt: fromDbTimeOrNull(r.confirmed_at),
    confirmedById: r.confirmed_by_id,
    resolvedAt: fromDbTimeOrNull(r.resolved_at),
    resolvedById: r.resolved_by_id,
    dismissedAt: fromDbTimeOrNull(r.dismissed_at),
    dismissedById: r.dismissed_by_id,
  };
}

interface ScanRequestRow {
  id: number;
  agent_id: number;
  namespaces: string;
  requested_by_id: number | null;
  requested_at: unknown;
  picked_up_at: unknown;
}

function scanRequestFromRow(r: ScanRequestRow): ScanRequest {
  return {
    id: r.id,
    agentId: r.agent_id,
    namespaces: JSON.parse(r.namespaces) as string[],
    requestedById: r.requested_by_id,
    requestedAt: fromDbTime(r.requested_at),
    pickedUpAt: fromDbTimeOrNull(r.picked_up_at),
  };
}

export function createVulnerabilityService(ctx: ServiceContext): VulnerabilityService {
  const { knex } = ctx;

  async function get(id: number, db: Knex | Knex.Transaction = knex): Promise<Vulnerability | undefined> {
    const row = (await db("vulnerabilities").where({ id }).first()) as VulnerabilityRow | undefined;
    return row && fromRow(row);
  }

  async function byUuid(uuid: string, db: Knex | Knex.Transaction = knex): Promise<VulnerabilityRow | undefined> {
    return (await db("vulnerabilities").where({ finding_uuid: uuid }).first()) as VulnerabilityRow | undefined;
  }

  /** One attempt at GitLab's idempotent create (see reportFromAgent). */
  async function record(agent: Agent, report: StarboardReport): Promise<{ vulnerability: Vulnerability; created: boolean; reopened: boolean }> {
    const v = report.vulnerability;
    const k8s = v.location.kubernetes_resource;
    if (k8s.agent_id !== String(agent.id)) {
      throw invalid(`vulnerability[location][kubernetes_resource][agent_id] must be this agent's id (${agent.id}), got ${JSON.stringify(k8s.agent_id)}`);
    }
    const identifiers: VulnerabilityIdentifier[] = v.identifiers.map((id) => {
      const externalType = externalTypeOf(id.name);
      return { external_type: externalType, external_id: id.name, name: id.name, url: id.url ?? null, fingerprint: identifierFingerprint(externalType, id.name) };
    });
    const locationFp = locationFingerprint(agent.id, k8s, v.location.dependency.package.name);
    const uuid = findingUuid(identifiers[0]!.fingerprint, locationFp, agent.projectId);
    const now = toDbTime(ctx.now());
    return inTransaction(knex, async (trx) => {
      const existing = await byUuid(uuid, trx);
      if (existing) {
        // GitLab answers the existing finding unchanged; one that a scan resolved is detected again here.
        const reopen = existing.state === "resolved" && existing.resolved_by_id === null;
        await trx("vulnerabilities")
          .where({ id: existing.id })
          .update({
            last_detected_at: now,
            ...(reopen ? { state: "detected", resolved_at: null, resolved_on_default_branch: false, updated_at: now } : {}),
          });
        if (reopen) await trx("vulnerability_state_transitions").insert({ vulnerability_id: existing.id, from_state: "resolved", to_state: "detected", author_id: null, comment: "detected again by a scan", created_at: now });
        return { vulnerability: (await get(existing.id, trx))!, created: false, reopened: reopen };
      }
      const row = {
        project_id: agent.projectId,
        cluster_agent_id: agent.id,
        finding_uuid: uuid,
        report_type: REPORT_TYPE,
        state: "detected",
        severity: v.severity,
        confidence: v.confidence ?? "unknown",
        title: truncate(v.name, TITLE_MAX),
        message: v.message ?? "",
        description: v.description ?? "",
        solution: v.solution ?? "",
        location_fingerprint: locationFp,
        primary_identifier_fingerprint: identifiers[0]!.fingerprint,
        project_fingerprint: sha1Hex(identifiers[0]!.name),
        metadata_version: METADATA_VERSION,
        k8s_namespace: k8s.namespace,
        k8s_kind: k8s.kind,
        k8s_name: k8s.name,
        location: JSON.stringify(v.location),
        identifiers: JSON.stringify(identifiers),
        links: JSON.stringify(v.links),
        scanner: JSON.stringify({ external_id: report.scanner.id, name: report.scanner.name, vendor: report.scanner.vendor.name, version: report.scanner.version ?? null }),
        author_id: agent.createdByUserId,
        resolved_on_default_branch: false,
        created_at: now,
        updated_at: now,
        last_detected_at: now,
      };
      const [inserted] = (await trx("vulnerabilities").insert(row).returning("id")) as Array<{ id: number }>;
      return { vulnerability: (await get(inserted!.id, trx))!, created: true, reopened: false };
    });
  }

  const service: VulnerabilityService = {
    async reportFromAgent(agent, report) {
      try {
        return await record(agent, report);
      } catch (err) {
        // Two reports of one finding at once: the other one created it, and this one finds it.
        if (!isUniqueViolation(err)) throw err;
        return record(agent, report);
      }
    },

    async resolveUndetected(agent, uuids, namespaces) {
      const seen = new Set(uuids);
      let query = knex("vulnerabilities")
        .where({ project_id: agent.projectId, cluster_agent_id: agent.id, report_type: REPORT_TYPE })
        .whereIn("state", ACTIVE_STATES as string[]);
      if (namespaces) query = query.whereIn("k8s_namespace", [...namespaces]);
      const candidates = (await query.select("id", "finding_uuid")) as Array<{ id: number; finding_uuid: string }>;
      const undetected = candidates.filter((c) => !seen.has(c.finding_uuid)).map((c) => c.id);
      const now = toDbTime(ctx.now());
      let resolved = 0;
      for (let i = 0; i < undetected.length; i += RESOLVE_BATCH) {
        const batch = undetected.slice(i, i + RESOLVE_BATCH);
        await inTransaction(knex, async (trx) => {
          const rows = (await trx("vulnerabilities").whereIn("id", batch).whereIn("state", ACTIVE_STATES as string[]).select("id", "state")) as Array<{ id: number; state: string }>;
          if (rows.length === 0) return;
          await trx("vulnerabilities")
            .whereIn("id", rows.map((r) => r.id))
            .update({ state: "resolved", resolved_on_default_branch: true, resolved_at: now, resolved_by_id: null, updated_at: now });
          await trx("vulnerability_state_transitions").insert(
            rows.map((r) => ({ vulnerability_id: r.id, from_state: r.state, to_state: "resolved", author_id: null, comment: "no longer detected by a scan", created_at: now })),
          );
          resolved += rows.length;
        });
      }
      return resolved;
    },

    async list(projectId, filters = {}) {
      let query = knex("vulnerabilities").where({ project_id: projectId });
      if (filters.severities?.length) query = query.whereIn("severity", filters.severities);
      if (filters.states?.length) query = query.whereIn("state", filters.states);
      if (filters.clusterAgentIds?.length) query = query.whereIn("cluster_agent_id", filters.clusterAgentIds);
      if (filters.reportTypes?.length) query = query.whereIn("report_type", filters.reportTypes);
      const rows = (await query.select()) as VulnerabilityRow[];
      const rank = (s: string) => {
        const i = (SEVERITY_ORDER as readonly string[]).indexOf(s);
        return i < 0 ? SEVERITY_ORDER.length : i;
      };
      return rows.map(fromRow).sort((a, b) => rank(a.severity) - rank(b.severity) || b.id - a.id);
    },

    get: (id) => get(id),

    async transition(id, action, userId, comment) {
      const to = ACTION_STATE[action];
      return inTransaction(knex, async (trx) => {
        const current = await get(id, trx);
        if (!current) throw invalid("vulnerability not found");
        if (current.state === to) return { vulnerability: current, changed: false };
        const now = toDbTime(ctx.now());
        const changes: Record<string, unknown> = { state: to, updated_at: now };
        if (to === "confirmed") Object.assign(changes, { confirmed_at: now, confirmed_by_id: userId });
        if (to === "resolved") Object.assign(changes, { resolved_at: now, resolved_by_id: userId });
        if (to === "dismissed") Object.assign(changes, { dismissed_at: now, dismissed_by_id: userId });
        if (to === "detected") {
          // GitLab's RevertToDetectedService clears what the other states set.
          Object.assign(changes, { confirmed_at: null, confirmed_by_id: null, resolved_at: null, resolved_by_id: null, dismissed_at: null, dismissed_by_id: null });
        }
        await trx("vulnerabilities").where({ id }).update(changes);
        await trx("vulnerability_state_transitions").insert({ vulnerability_id: id, from_state: current.state, to_state: to, author_id: userId, comment: comment ?? null, created_at: now });
        return { vulnerability: (await get(id, trx))!, changed: true };
      });
    },

    async countBySeverityAndState() {
      const rows = (await knex("vulnerabilities").select("severity", "state").count({ count: "*" }).groupBy("severity", "state")) as Array<{
        severity: string;
        state: string;
        count: unknown;
      }>;
      return rows.map((r) => ({ severity: r.severity, state: r.state, count: Number(r.count) }));
    },

    async requestScan(agentId, namespaces, userId) {
      const [row] = (await knex("vulnerability_scan_requests")
        .insert({ agent_id: agentId, namespaces: JSON.stringify([...namespaces]), requested_by_id: userId, requested_at: toDbTime(ctx.now()) })
        .returning("*")) as ScanRequestRow[];
      return scanRequestFromRow(row!);
    },

    async takeScanRequests(agentId) {
      return inTransaction(knex, async (trx) => {
        const rows = (await trx("vulnerability_scan_requests").where({ agent_id: agentId }).whereNull("picked_up_at").orderBy("id")) as ScanRequestRow[];
        if (rows.length === 0) return [];
        const now = toDbTime(ctx.now());
        // Only rows still pending: with two platform replicas, one request goes to one poll.
        const taken = await trx("vulnerability_scan_requests").whereIn("id", rows.map((r) => r.id)).whereNull("picked_up_at").update({ picked_up_at: now });
        if (taken !== rows.length) return [];
        return rows.map((r) => scanRequestFromRow({ ...r, picked_up_at: now }));
      });
    },

    async listScanRequests(agentId) {
      const rows = (await knex("vulnerability_scan_requests").where({ agent_id: agentId }).orderBy("id", "desc").limit(100)) as ScanRequestRow[];
      return rows.map(scanRequestFromRow);
    },
  };
  return service;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}
