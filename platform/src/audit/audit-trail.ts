import type { KasAuditEvent, KubernetesApiRequestEvent } from "@kasbridge/sdk/platform-client";
import { invalid } from "../services/errors.js";
import type { ServiceContext } from "../services/context.js";
import { fromDbTime, toDbTime } from "../store/db-util.js";

/** Every kind of entry in the audit trail. */
export const AUDIT_EVENT_KINDS = [
  "k8s_api_request",
  "agent_connected",
  "agent_disconnected",
  "token_created",
  "token_revoked",
  "config_applied",
  "config_rejected",
] as const;
export type AuditEventKind = (typeof AUDIT_EVENT_KINDS)[number];

/** Who did it. Never a credential. */
export interface AuditActorRecord {
  /** ci_job, user, refused (a credential KAS refused: its kind only), agent (its process), platform (a push). */
  kind: string;
  user_id?: number;
  username?: string;
  job_id?: number;
  /** The CI job's project. */
  project_id?: number;
  pipeline_id?: number;
  access_type?: string;
  /** A refused credential's kind (ci, pat, other, none). */
  credential?: string;
}

/** One entry of the audit trail as stored and served (docs/observability.md#audit-trail). */
export interface AuditEvent {
  id: number;
  created_at: string;
  kind: AuditEventKind;
  agent_id: number | null;
  /** The agent's configuration project. */
  project_id: number | null;
  actor: AuditActorRecord;
  /** k8s_api_request only: the identity the cluster saw, null for the agent's own. */
  impersonated: { username: string; groups: string[] } | null;
  /** k8s_api_request only. */
  request: Pick<KubernetesApiRequestEvent, "method" | "path" | "verb" | "resource" | "namespace" | "name" | "status" | "duration_ms" | "trace_id"> | null;
  /** What else the kind has: the connection of agent_connected, the token of token_created, the commit of config_applied. */
  details: Record<string, string | number | null> | null;
  error: string | null;
}

export type AuditEventInput = Omit<AuditEvent, "id" | "created_at" | "project_id"> & { created_at?: string };

export interface AuditFilter {
  kind?: AuditEventKind;
  agentId?: number;
  /** The agents of this configuration project. */
  projectId?: number;
  userId?: number;
  username?: string;
  jobId?: number;
  verb?: string;
  namespace?: string;
  status?: number;
  createdAfter?: Date;
  createdBefore?: Date;
}

export interface AuditTrailOptions {
  /**
   * How long entries are kept. Default 90 days. Older ones are no longer served and are deleted by
   * `prune` (on writes at most hourly, and by whoever owns the trail's schedule: startAuditPruning).
   */
  retentionMs?: number;
}

export interface AuditTrail {
  /** Stores events KAS reported (validated: a bad event is a 400 naming it, and nothing of the batch is stored). */
  recordFromKas(raw: unknown): Promise<void>;
  /** Stores an event the platform itself saw (tokens, configurations). A failure is logged, never thrown. */
  record(event: AuditEventInput): Promise<void>;
  /** Newest first, `limit` from `offset`, and how many match. */
  list(filter: AuditFilter, page: { offset: number; limit: number }): Promise<{ events: AuditEvent[]; total: number }>;
  /** Oldest first, after cursor `afterId` (0: from the oldest kept), at most `limit`. */
  after(afterId: number, filter: AuditFilter, limit: number): Promise<AuditEvent[]>;
  /** Calls `listener` after new events are stored; returns an unsubscribe function. */
  onRecorded(listener: () => void): () => void;
  /** Deletes what is older than the retention now (also done on writes, at most hourly). */
  prune(): Promise<number>;
}

const PRUNE_EVERY_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

interface AuditRow {
  id: number;
  created_at: unknown;
  record: string;
}

/**
 * The audit trail: every Kubernetes API request through KAS's proxy (allowed or refused) with who,
 * which agent, as whom, what and the answer, and agent activity (connections, tokens,
 * configurations), as GitLab's agent activity list. Filterable columns beside the whole record
 * as JSON.
 */
export function createAuditTrail(ctx: ServiceContext, options: AuditTrailOptions = {}): AuditTrail {
  const { knex } = ctx;
  const retentionMs = options.retentionMs ?? 90 * DAY_MS;
  const listeners = new Set<() => void>();
  let lastPruneMs = 0;

  async function insert(events: AuditEventInput[]): Promise<void> {
    if (events.length === 0) return;
    const agentIds = [...new Set(events.map((e) => e.agent_id).filter((id): id is number => id !== null))];
    const projects = new Map<number, number>();
    if (agentIds.length > 0) {
      for (const row of (await knex("cluster_agents").whereIn("id", agentIds).select("id", "project_id")) as Array<{ id: number; project_id: number }>) {
        projects.set(row.id, row.project_id);
      }
    }
    const now = ctx.now();
    const rows = events.map((e) => {
      const { created_at: at, ...rest } = e;
      const createdAt = at ? new Date(at) : now;
      const record = { ...rest, project_id: e.agent_id === null ? null : (projects.get(e.agent_id) ?? null) };
      return {
        created_at: toDbTime(createdAt),
        kind: e.kind,
        agent_id: e.agent_id,
        project_id: record.project_id,
        user_id: e.actor.user_id ?? null,
        username: e.actor.username ?? null,
        job_id: e.actor.job_id ?? null,
        verb: e.request?.verb ?? null,
        namespace: e.request?.namespace ?? null,
        status: e.request?.status ?? null,
        record: JSON.stringify(record),
      };
    });
    for (let i = 0; i < rows.length; i += 100) await knex("audit_events").insert(rows.slice(i, i + 100));
    if (now.getTime() - lastPruneMs >= PRUNE_EVERY_MS) await prune();
    for (const listener of listeners) listener();
  }

  async function prune(): Promise<number> {
    const now = ctx.now();
    lastPruneMs = now.getTime();
    return knex("audit_events").where("created_at", "<", toDbTime(new Date(now.getTime() - retentionMs))).delete();
  }

  function filtered(filter: AuditFilter) {
    // Expired entries are never served, even before the next prune deletes them.
    const q = knex("audit_events").where("created_at", ">=", toDbTime(new Date(ctx.now().getTime() - retentionMs)));
    if (filter.kind) q.where("kind", filter.kind);
    if (filter.agentId !== undefined) q.where("agent_id", filter.agentId);
    if (filter.projectId !== undefined) q.where("project_id", filter.projectId);
    if (filter.userId !== undefined) q.where("user_id", filter.userId);
    if (filter.username !== undefined) q.where("username", filter.username);
    if (filter.jobId !== undefined) q.where("job_id", filter.jobId);
    if (filter.verb !== undefined) q.where("verb", filter.verb);
    if (filter.namespace !== undefined) q.where("namespace", filter.namespace);
    if (filter.status !== undefined) q.where("status", filter.status);
    if (filter.createdAfter) q.where("created_at", ">=", toDbTime(filter.createdAfter));
    if (filter.createdBefore) q.where("created_at", "<", toDbTime(filter.createdBefore));
    return q;
  }

  return {
    async recordFromKas(raw) {
      await insert(parseKasEvents(raw));
    },
    async record(event) {
      try {
        await insert([event]);
      } catch (err) {
        ctx.logger.error({ err, kind: event.kind, agentId: event.agent_id }, "cannot record an audit event");
      }
    },
    async list(filter, page) {
      const [{ n }] = (await filtered(filter).count({ n: "*" })) as Array<{ n: number | string }>;
      const rows = (await filtered(filter).orderBy("id", "desc").offset(page.offset).limit(page.limit).select("id", "created_at", "record")) as AuditRow[];
      return { events: rows.map(fromRow), total: Number(n) };
    },
    async after(afterId, filter, limit) {
      const rows = (await filtered(filter).where("id", ">", afterId).orderBy("id", "asc").limit(limit).select("id", "created_at", "record")) as AuditRow[];
      return rows.map(fromRow);
    },
    onRecorded(listener) {
      const wrapped = () => listener();
      listeners.add(wrapped);
      return () => listeners.delete(wrapped);
    },
    prune,
  };
}

function fromRow(row: AuditRow): AuditEvent {
  return { id: Number(row.id), created_at: fromDbTime(row.created_at).toISOString(), ...(JSON.parse(row.record) as Omit<AuditEvent, "id" | "created_at">) };
}

/** KAS's batch (`{events: [...]}`): each event checked field by field; a bad one is a 400 naming it. */
export function parseKasEvents(raw: unknown): AuditEventInput[] {
  const body = raw as { events?: unknown } | null;
  if (typeof body !== "object" || body === null || !Array.isArray(body.events)) throw invalid("events must be an array");
  if (body.events.length > 1000) throw invalid("at most 1000 events per request");
  return body.events.map((e, i) => parseKasEvent(e, `events[${i}]`));
}

function parseKasEvent(raw: unknown, at: string): AuditEventInput {
  const e = obj(raw, at);
  const created_at = str(e.at, `${at}.at`);
  if (Number.isNaN(Date.parse(created_at))) throw invalid(`${at}.at must be a time`);
  if (e.kind === "k8s_api_request") {
    const ev = e as unknown as Record<string, unknown>;
    const actor = obj(ev.actor, `${at}.actor`);
    const kind = str(actor.kind, `${at}.actor.kind`);
    let actorRecord: AuditActorRecord;
    if (kind === "ci_job") {
      actorRecord = {
        kind,
        user_id: int(actor.user_id, `${at}.actor.user_id`),
        username: str(actor.username, `${at}.actor.username`),
        job_id: int(actor.job_id, `${at}.actor.job_id`),
        project_id: int(actor.project_id, `${at}.actor.project_id`),
        pipeline_id: int(actor.pipeline_id, `${at}.actor.pipeline_id`),
      };
    } else if (kind === "user") {
      actorRecord = { kind, user_id: int(actor.user_id, `${at}.actor.user_id`), username: str(actor.username, `${at}.actor.username`), access_type: str(actor.access_type, `${at}.actor.access_type`) };
    } else if (kind === "refused") {
      actorRecord = { kind, credential: str(actor.credential, `${at}.actor.credential`) };
    } else {
      throw invalid(`${at}.actor.kind must be ci_job, user or refused`);
    }
    let impersonated: AuditEvent["impersonated"] = null;
    if (ev.impersonated !== null && ev.impersonated !== undefined) {
      const imp = obj(ev.impersonated, `${at}.impersonated`);
      const groups = imp.groups;
      if (!Array.isArray(groups) || !groups.every((g) => typeof g === "string")) throw invalid(`${at}.impersonated.groups must be strings`);
      impersonated = { username: str(imp.username, `${at}.impersonated.username`), groups: groups as string[] };
    }
    return {
      created_at,
      kind: "k8s_api_request",
      agent_id: ev.agent_id === null ? null : int(ev.agent_id, `${at}.agent_id`),
      actor: actorRecord,
      impersonated,
      request: {
        method: str(ev.method, `${at}.method`),
        path: str(ev.path, `${at}.path`, true),
        verb: str(ev.verb, `${at}.verb`),
        resource: str(ev.resource, `${at}.resource`, true),
        namespace: str(ev.namespace, `${at}.namespace`, true),
        name: str(ev.name, `${at}.name`, true),
        status: int(ev.status, `${at}.status`),
        duration_ms: int(ev.duration_ms, `${at}.duration_ms`),
        trace_id: ev.trace_id === null || ev.trace_id === undefined ? null : str(ev.trace_id, `${at}.trace_id`),
      },
      details: null,
      error: ev.error === null || ev.error === undefined ? null : str(ev.error, `${at}.error`, true),
    };
  }
  if (e.kind === "agent_connected" || e.kind === "agent_disconnected") {
    return {
      created_at,
      kind: e.kind,
      agent_id: int(e.agent_id, `${at}.agent_id`),
      actor: { kind: "agent" },
      impersonated: null,
      request: null,
      details: {
        connection_id: str(e.connection_id, `${at}.connection_id`),
        pod_name: str(e.pod_name, `${at}.pod_name`, true),
        pod_namespace: str(e.pod_namespace, `${at}.pod_namespace`, true),
        agent_version: str(e.agent_version, `${at}.agent_version`, true),
        kas_instance: str(e.kas_instance, `${at}.kas_instance`, true),
      },
      error: null,
    };
  }
  throw invalid(`${at}.kind must be k8s_api_request, agent_connected or agent_disconnected`);
}

function obj(value: unknown, key: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(`${key} must be an object`);
  return value as Record<string, unknown>;
}

function str(value: unknown, key: string, allowEmpty = false): string {
  if (typeof value !== "string" || (!allowEmpty && value === "") || value.length > 4096) throw invalid(`${key} must be a${allowEmpty ? "" : " non-empty"} string (at most 4096 characters)`);
  return value;
}

function int(value: unknown, key: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) throw invalid(`${key} must be a non-negative integer`);
  return value;
}

/** Type guard for a kind name from a query. */
export function isAuditEventKind(value: string): value is AuditEventKind {
  return (AUDIT_EVENT_KINDS as readonly string[]).includes(value);
}

export type { KasAuditEvent };
