/**
 * kasbridge extension: the audit trail over REST. `GET /api/v4/kubernetes_audit_events` (admins:
 * filters, GitLab's pagination, newest first), `GET /api/v4/kubernetes_audit_events/stream`
 * (admins: JSON lines, oldest first after a cursor, `follow=true` to keep receiving, for a SIEM),
 * and `GET …/cluster_agents/:agent_id/activity_events` (one agent's entries, for who may read it).
 */
import type { Request, Response, Router } from "express";
import { paramError } from "../api/http-errors.js";
import { pageOf, setPageHeaders } from "../api/pagination.js";
import type { RestRouteDeps } from "../api/rest-route-deps.js";
import { isAuditEventKind, type AuditFilter, type AuditTrail } from "./audit-trail.js";

const STREAM_BATCH = 500;

export function registerAuditRoutes(router: Router, deps: RestRouteDeps & { loadAgentForRead(req: Request, res: Response): Promise<{ agent: { id: number } }> }): void {
  const { services, read, requireAdmin } = deps;

  router.get("/api/v4/kubernetes_audit_events", read, requireAdmin, async (req, res) => {
    await listPage(services.audit, auditFilter(req), req, res);
  });

  router.get("/api/v4/kubernetes_audit_events/stream", read, requireAdmin, async (req, res) => {
    await stream(services.audit, auditFilter(req), req, res);
  });

  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/activity_events", read, async (req, res) => {
    const { agent } = await deps.loadAgentForRead(req, res);
    await listPage(services.audit, { ...auditFilter(req), agentId: agent.id }, req, res);
  });
}

async function listPage(audit: AuditTrail, filter: AuditFilter, req: Request, res: Response): Promise<void> {
  const { page, perPage, offset } = pageOf(req);
  const { events, total } = await audit.list(filter, { offset, limit: perPage });
  setPageHeaders(res, page, perPage, total);
  res.json(events);
}

/** JSON lines after `after` (an entry id; default 0, the oldest kept); with `follow=true` the response stays open for new entries. */
async function stream(audit: AuditTrail, filter: AuditFilter, req: Request, res: Response): Promise<void> {
  let cursor = optionalInt(req.query.after, "after") ?? 0;
  const follow = req.query.follow === "true" || req.query.follow === "1";
  let closed = false;
  res.on("close", () => (closed = true));
  res.writeHead(200, { "content-type": "application/x-ndjson; charset=utf-8", "cache-control": "no-store" });
  res.flushHeaders();

  const drain = async (): Promise<void> => {
    for (;;) {
      const events = await audit.after(cursor, filter, STREAM_BATCH);
      for (const e of events) {
        if (closed) return;
        cursor = e.id;
        // Backpressure: a slow reader holds the stream, not the platform's memory.
        if (!res.write(`${JSON.stringify(e)}\n`)) await new Promise<void>((resolve) => res.once("drain", resolve).once("close", resolve));
      }
      if (events.length < STREAM_BATCH) return;
    }
  };

  if (!follow) {
    await drain();
    res.end();
    return;
  }
  // New entries wake one drain at a time; a wake during a drain runs another after it.
  let running: Promise<void> | undefined;
  let again = false;
  const wake = () => {
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      do {
        again = false;
        await drain();
      } while (again && !closed);
    })()
      .catch(() => void res.destroy())
      .finally(() => (running = undefined));
  };
  const unsubscribe = audit.onRecorded(wake);
  res.on("close", unsubscribe);
  wake();
}

function auditFilter(req: Request): AuditFilter {
  const q = req.query;
  const kind = optionalString(q.kind, "kind");
  if (kind !== undefined && !isAuditEventKind(kind)) throw paramError("kind does not have a valid value");
  return {
    kind,
    agentId: optionalInt(q.agent_id, "agent_id"),
    projectId: optionalInt(q.project_id, "project_id"),
    userId: optionalInt(q.user_id, "user_id"),
    username: optionalString(q.username, "username"),
    jobId: optionalInt(q.job_id, "job_id"),
    verb: optionalString(q.verb, "verb"),
    namespace: optionalString(q.namespace, "namespace"),
    status: optionalInt(q.status, "status"),
    createdAfter: optionalTime(q.created_after, "created_after"),
    createdBefore: optionalTime(q.created_before, "created_before"),
  };
}

function optionalString(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length > 255) throw paramError(`${name} is invalid`);
  return value;
}

function optionalInt(value: unknown, name: string): number | undefined {
  const s = optionalString(value, name);
  if (s === undefined) return undefined;
  if (!/^[0-9]{1,15}$/.test(s)) throw paramError(`${name} is invalid`);
  return Number(s);
}

function optionalTime(value: unknown, name: string): Date | undefined {
  const s = optionalString(value, name);
  if (s === undefined) return undefined;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw paramError(`${name} must be an ISO 8601 time`);
  return new Date(t);
}
