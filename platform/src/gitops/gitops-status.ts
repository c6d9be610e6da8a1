import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import type { Knex } from "knex";
import { ManifestProjectStatusSchema, type ManifestProjectStatus } from "@kasbridge/sdk/gen/kasbridge/gitops/v1/sync_status_pb";

/** Manifest projects reported per agent, at most (a report beyond it is refused). */
export const MAX_GITOPS_PROJECTS_PER_AGENT = 100;
/** Objects kept per report; the rest are counted in `objects_truncated`. */
export const MAX_GITOPS_OBJECTS_PER_REPORT = 1000;

/** Stores what an agent reported for one manifest project (the latest report wins). */
export async function recordGitopsStatus(knex: Knex, agentId: number, status: ManifestProjectStatus, now: Date): Promise<void> {
  if (status.project === "") throw new Error("a GitOps status names its project");
  const kept = { ...status, objects: status.objects.slice(0, MAX_GITOPS_OBJECTS_PER_REPORT) };
  const json = JSON.stringify({
    ...(toJson(ManifestProjectStatusSchema, kept) as Record<string, JsonValue>),
    objectsTruncated: status.objects.length - kept.objects.length,
  });
  await knex.transaction(async (trx) => {
    const updated = await trx("agent_gitops_status").where({ agent_id: agentId, project: status.project }).update({ status: json, updated_at: now });
    if (updated > 0) return;
    const [{ count }] = (await trx("agent_gitops_status").where({ agent_id: agentId }).count({ count: "*" })) as Array<{ count: number | string }>;
    if (Number(count) >= MAX_GITOPS_PROJECTS_PER_AGENT) throw new Error(`an agent reports at most ${MAX_GITOPS_PROJECTS_PER_AGENT} manifest projects`);
    await trx("agent_gitops_status").insert({ agent_id: agentId, project: status.project, status: json, updated_at: now });
  });
}

/** The REST entity of every manifest project an agent reported, by project path. */
export async function listGitopsStatus(knex: Knex, agentId: number): Promise<GitopsStatusEntity[]> {
  const rows = (await knex("agent_gitops_status").where({ agent_id: agentId }).orderBy("project")) as Array<{ status: string }>;
  return rows.map((row) => {
    const { objectsTruncated, ...json } = JSON.parse(row.status) as Record<string, JsonValue> & { objectsTruncated?: number };
    return gitopsStatusEntity(fromJson(ManifestProjectStatusSchema, json), objectsTruncated ?? 0);
  });
}

export interface GitopsStatusEntity {
  project: string;
  commit_seen: string | null;
  commit_applied: string | null;
  last_error: string | null;
  dry_run: boolean;
  updated_at: string | null;
  objects: Array<{
    group: string;
    version: string;
    kind: string;
    namespace: string | null;
    name: string;
    status: string;
    message: string | null;
    source: string | null;
  }>;
  objects_truncated: number;
}

function gitopsStatusEntity(s: ManifestProjectStatus, objectsTruncated: number): GitopsStatusEntity {
  const orNull = (v: string) => (v === "" ? null : v);
  return {
    project: s.project,
    commit_seen: orNull(s.commitSeen),
    commit_applied: orNull(s.commitApplied),
    last_error: orNull(s.lastError),
    dry_run: s.dryRun,
    updated_at: s.updatedAt ? new Date(Number(s.updatedAt.seconds) * 1000 + Math.floor(s.updatedAt.nanos / 1e6)).toISOString() : null,
    objects: s.objects.map((o) => ({
      group: o.group,
      version: o.version,
      kind: o.kind,
      namespace: orNull(o.namespace),
      name: o.name,
      status: o.status,
      message: orNull(o.message),
      source: orNull(o.source),
    })),
    objects_truncated: objectsTruncated,
  };
}
