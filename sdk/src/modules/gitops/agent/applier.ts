import type { Logger } from "pino";
import type { ObjectStatus } from "../../../gen/kasbridge/gitops/v1/sync_status_pb.js";
import { KubeApiError, isNotFound, type KubeHttp } from "../../../agent/kube/kube-http.js";
import { resourcePath, type ResourceInfo, type ResourceMapper } from "../../../agent/kube/resource-mapper.js";
import { sleep } from "../../../util/backoff.js";
import { eachLimit } from "../../../util/each-limit.js";
import { ManifestError, ManifestsInvalidError, type DecodedObject, type ManifestObject } from "./manifest-decoder.js";
import { readiness, type Readiness } from "./object-status.js";
import { OWNING_INVENTORY_ANNOTATION, inventoryKey, parseInventoryKey, type Inventory, type InventoryEntry } from "./inventory.js";

/** The agent's field manager for everything it applies (GitLab's). */
export const FIELD_MANAGER = "agentk";

export type InventoryPolicy = "must_match" | "adopt_if_no_inventory" | "adopt_all";

export interface SyncSettings {
  defaultNamespace: string;
  prune: boolean;
  pruneTimeoutMs: number;
  /** "orphan" | "background" | "foreground". */
  prunePropagationPolicy: string;
  reconcileTimeoutMs: number;
  inventoryPolicy: InventoryPolicy;
  /** "none" applies; "client" and "server" only validate (server-side dry run), changing nothing. */
  dryRunStrategy: "none" | "client" | "server";
}

/** What a sync did to one object (status: Current, InProgress, Failed, Pruned, Unknown). */
export type ObjectResult = Omit<ObjectStatus, "$typeName">;

export interface SyncOutcome {
  objects: ObjectResult[];
  /** Undefined when every object was applied and is ready (and pruning, if on, is done). */
  error?: string;
}

interface PlannedObject {
  decoded: DecodedObject;
  info: ResourceInfo | undefined;
  /** The object as sent: namespace defaulted, owning-inventory annotation set. */
  body: ManifestObject;
  namespace: string;
  key: string;
}

/** API requests a sync keeps in flight at once (checks, applies of one rank, readiness reads). */
const CONCURRENCY = 8;

/** Where the CRDs and Namespaces of a set go in the apply order: first, as GitLab's applier orders them. */
const rank = (kind: string, namespaced: boolean | undefined) =>
  kind === "CustomResourceDefinition" ? 0 : kind === "Namespace" ? 1 : namespaced === false ? 2 : 3;

/**
 * Applies one commit's objects the way GitLab's agent does with cli-utils: server-side apply as
 * `agentk` (conflicts forced), CRDs before their custom resources and Namespaces before what is in
 * them, an inventory ConfigMap recording what this agent applied from this project, pruning of
 * what left git (when prune is on, in reverse order), and a readiness wait within the reconcile
 * timeout. Everything is checked first (kinds, duplicates, inventory ownership, a server-side dry
 * run), so a commit with an invalid object changes nothing in the cluster.
 */
export class ManifestApplier {
  constructor(
    private readonly kube: KubeHttp,
    private readonly mapper: ResourceMapper,
    private readonly inventory: Inventory,
    private readonly logger: Logger,
  ) {}

  /**
   * `superseded` aborts the readiness wait only (a newer commit arrived): what was applied stays
   * applied. `signal` aborts everything (shutdown).
   */
  async sync(decoded: DecodedObject[], settings: SyncSettings, signal: AbortSignal, superseded?: AbortSignal): Promise<SyncOutcome> {
    const planned = await this.plan(decoded, settings, signal);
    const previous = await this.inventory.read(signal);
    await this.checkOwnership(planned, settings.inventoryPolicy, signal);
    await this.validate(planned, signal);
    const results = new Map<string, ObjectResult>();
    for (const p of planned) results.set(p.key, result(p, "Unknown", ""));
    if (settings.dryRunStrategy !== "none") {
      for (const r of results.values()) r.message = "dry run: validated, not applied";
      return { objects: [...results.values()] };
    }

    const ordered = [...planned].sort((a, b) => rank(a.body.kind, a.info?.namespaced) - rank(b.body.kind, b.info?.namespaced));
    const entries = (list: PlannedObject[]): InventoryEntry[] => list.map((p) => ({ key: p.key, apiVersion: p.body.apiVersion }));
    // Namespaces (and CRDs) first; then the inventory lists old and new objects before anything
    // else is applied, so an interrupted sync still knows everything it may have to prune.
    const early = ordered.filter((p) => rank(p.body.kind, p.info?.namespaced) <= 1);
    await this.applyInOrder(early, signal);
    if (early.some((p) => p.body.kind === "CustomResourceDefinition")) await this.awaitCrds(early, settings, signal);
    await this.inventory.write([...previous, ...entries(ordered)], signal);
    const rest = ordered.slice(early.length);
    for (const p of rest) if (!p.info) p.info = await this.resolveDeferred(p, signal);
    await this.applyInOrder(rest, signal);
    this.logger.info({ objects: ordered.length }, "manifests applied");

    const pruned: ObjectResult[] = [];
    const wanted = new Set(planned.map((p) => p.key));
    const leftovers = previous.filter((e) => !wanted.has(e.key));
    if (settings.prune) pruned.push(...(await this.prune(leftovers, settings, signal)));
    await this.inventory.write(entries(ordered), signal);

    const error = await this.awaitReady(ordered, results, settings.reconcileTimeoutMs, signal, superseded);
    return { objects: [...results.values(), ...pruned], error };
  }

  /** Resolves kinds, defaults namespaces, finds duplicates. Throws ManifestsInvalidError. */
  private async plan(decoded: DecodedObject[], settings: SyncSettings, signal: AbortSignal): Promise<PlannedObject[]> {
    const problems: ManifestError[] = [];
    /** group/kind -> scope of the CRDs among these manifests. */
    const definedHere = new Map<string, string>();
    for (const d of decoded) {
      if (d.object.kind !== "CustomResourceDefinition") continue;
      const spec = d.object.spec as { group?: string; names?: { kind?: string }; scope?: string } | undefined;
      if (spec?.group && spec.names?.kind) definedHere.set(`${spec.group}/${spec.names.kind}`, spec.scope ?? "Namespaced");
    }
    const planned: PlannedObject[] = [];
    const seen = new Map<string, DecodedObject>();
    for (const d of decoded) {
      const { apiVersion, kind } = d.object;
      const group = apiVersion.includes("/") ? apiVersion.split("/")[0]! : "";
      const info = await this.mapper.resource(apiVersion, kind, signal);
      if (!info && !definedHere.has(`${group}/${kind}`)) {
        problems.push(new ManifestError(d.source, d.line, `unknown kind ${kind} in ${apiVersion} (no such resource in the cluster, and no CRD in these manifests defines it)`));
        continue;
      }
      // A kind of a CRD from these manifests: its scope comes from the CRD (resolved again before applying).
      const namespaced = info ? info.namespaced : definedHere.get(`${group}/${kind}`) !== "Cluster";
      const namespace = namespaced ? (d.object.metadata.namespace || settings.defaultNamespace) : "";
      const body: ManifestObject = {
        ...d.object,
        metadata: {
          ...d.object.metadata,
          ...(namespaced ? { namespace } : { namespace: undefined }),
          annotations: { ...d.object.metadata.annotations, [OWNING_INVENTORY_ANNOTATION]: this.inventory.id },
        },
      };
      if (!namespaced) delete body.metadata.namespace;
      const key = inventoryKey(group, kind, namespace, d.object.metadata.name);
      const other = seen.get(key);
      if (other) {
        problems.push(new ManifestError(d.source, d.line, `${kind} ${namespace ? `${namespace}/` : ""}${d.object.metadata.name} is also defined in ${other.source}:${other.line}`));
        continue;
      }
      seen.set(key, d);
      planned.push({ decoded: d, info, body, namespace, key });
    }
    if (problems.length > 0) throw new ManifestsInvalidError(problems);
    return planned;
  }

  /** Applies objects rank by rank (CRDs, Namespaces, cluster-scoped, namespaced), each rank in parallel. */
  private async applyInOrder(objects: PlannedObject[], signal: AbortSignal): Promise<void> {
    for (let r = 0; r <= 3; r++) {
      await eachLimit(objects.filter((p) => rank(p.body.kind, p.info?.namespaced) === r), CONCURRENCY, (p) => this.apply(p, signal));
    }
  }

  /** Refuses objects that exist and belong to someone else, per the inventory policy. */
  private async checkOwnership(planned: PlannedObject[], policy: InventoryPolicy, signal: AbortSignal): Promise<void> {
    const problems: ManifestError[] = [];
    await eachLimit(planned, CONCURRENCY, async (p) => {
      if (!p.info) return;
      let live: ManifestObject;
      try {
        live = await this.kube.json<ManifestObject>("GET", resourcePath(p.info, p.namespace, p.body.metadata.name), { signal });
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      const owner = live.metadata?.annotations?.[OWNING_INVENTORY_ANNOTATION];
      if (owner === this.inventory.id || policy === "adopt_all") return;
      if (owner === undefined && policy === "adopt_if_no_inventory") return;
      const why = owner === undefined ? "it exists and was not applied by this agent from this project" : `it belongs to inventory ${owner}`;
      problems.push(new ManifestError(p.decoded.source, p.decoded.line, `cannot apply ${p.body.kind} ${describe(p)}: ${why} (inventory_policy ${policy})`));
    });
    throwProblems(problems);
  }

  /**
   * A server-side dry run of every object before any is applied: what the API server would refuse
   * (schema, validation) is found while nothing has changed. Objects in a Namespace or of a CRD
   * that these manifests create cannot be checked before those exist; they are checked by the
   * apply itself.
   */
  private async validate(planned: PlannedObject[], signal: AbortSignal): Promise<void> {
    const creates = new Set(planned.filter((p) => p.body.kind === "Namespace").map((p) => p.body.metadata.name));
    const problems: ManifestError[] = [];
    await eachLimit(planned, CONCURRENCY, async (p) => {
      if (!p.info || (p.namespace !== "" && creates.has(p.namespace))) return;
      try {
        await this.patch(p, signal, true);
      } catch (err) {
        // Outages and missing permissions are the agent's problem, not the manifests' (but a
        // server-side apply of a body that does not fit the schema is answered 500 "failed to
        // create typed patch object").
        if (!(err instanceof KubeApiError) || err.status === 401 || err.status === 403) throw err;
        if (err.status >= 500 && !/typed patch object|typed value/.test(err.message)) throw err;
        if (isNotFound(err) && p.namespace !== "") {
          problems.push(new ManifestError(p.decoded.source, p.decoded.line, `namespace ${p.namespace} of ${p.body.kind} ${p.body.metadata.name} does not exist`));
          return;
        }
        problems.push(new ManifestError(p.decoded.source, p.decoded.line, `${p.body.kind} ${describe(p)} is invalid: ${err.message}`));
      }
    });
    throwProblems(problems);
  }

  private patch(p: PlannedObject, signal: AbortSignal, dryRun = false): Promise<unknown> {
    return this.kube.json("PATCH", resourcePath(p.info!, p.namespace, p.body.metadata.name), {
      query: { fieldManager: FIELD_MANAGER, force: "true", ...(dryRun ? { dryRun: "All" } : {}) },
      body: p.body,
      contentType: "application/apply-patch+yaml",
      signal,
    });
  }

  private async apply(p: PlannedObject, signal: AbortSignal): Promise<void> {
    try {
      await this.patch(p, signal);
    } catch (err) {
      if (err instanceof KubeApiError) throw new Error(`${p.decoded.source}:${p.decoded.line}: cannot apply ${p.body.kind} ${describe(p)}: ${err.message}`, { cause: err });
      throw err;
    }
  }

  /** After creating CRDs: waits until each is Established, then forgets the cached kinds. */
  private async awaitCrds(early: PlannedObject[], settings: SyncSettings, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + Math.min(settings.reconcileTimeoutMs, 60_000);
    for (const p of early.filter((e) => e.body.kind === "CustomResourceDefinition")) {
      for (;;) {
        const live = await this.kube.json<Record<string, unknown>>("GET", resourcePath(p.info!, "", p.body.metadata.name), { signal });
        if (readiness({ ...live, kind: "CustomResourceDefinition" }).status === "Current") break;
        if (Date.now() > deadline) throw new Error(`CustomResourceDefinition ${p.body.metadata.name} is not established`);
        await sleep(200, signal);
        signal.throwIfAborted();
      }
    }
    this.mapper.reset();
  }

  private async resolveDeferred(p: PlannedObject, signal: AbortSignal): Promise<ResourceInfo> {
    const info = await this.mapper.resource(p.body.apiVersion, p.body.kind, signal);
    if (!info) throw new Error(`${p.decoded.source}:${p.decoded.line}: kind ${p.body.kind} in ${p.body.apiVersion} is still unknown after its CRD was applied`);
    return info;
  }

  /** Deletes what left git (only objects this inventory owns), namespaced first, and waits until they are gone. */
  private async prune(leftovers: InventoryEntry[], settings: SyncSettings, signal: AbortSignal): Promise<ObjectResult[]> {
    const results: ObjectResult[] = [];
    const targets: Array<{ path: string; result: ObjectResult }> = [];
    for (const entry of leftovers) {
      const { group, kind, namespace, name } = parseInventoryKey(entry.key);
      const info = await this.resourceForEntry(group, kind, entry.apiVersion, signal);
      const r: ObjectResult = { group, version: info?.version ?? "", kind, namespace, name, status: "Pruned", message: "", source: "" };
      results.push(r);
      if (!info) continue; // the kind is gone (its CRD was deleted): so are its objects
      const path = resourcePath(info, namespace, name);
      try {
        const live = await this.kube.json<ManifestObject>("GET", path, { signal });
        if (live.metadata?.annotations?.[OWNING_INVENTORY_ANNOTATION] !== this.inventory.id) {
          r.status = "Unknown";
          r.message = "not pruned: no longer owned by this inventory";
          continue;
        }
      } catch (err) {
        if (isNotFound(err)) continue;
        throw err;
      }
      targets.push({ path, result: r });
    }
    targets.sort((a, b) => rank(b.result.kind, b.result.namespace !== "") - rank(a.result.kind, a.result.namespace !== ""));
    for (const t of targets) {
      try {
        await this.kube.json("DELETE", t.path, { body: { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: capitalize(settings.prunePropagationPolicy) }, signal });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    const deadline = Date.now() + settings.pruneTimeoutMs;
    for (const t of targets) {
      for (;;) {
        try {
          await this.kube.json("GET", t.path, { signal });
        } catch (err) {
          if (isNotFound(err)) break;
          throw err;
        }
        if (Date.now() > deadline) {
          t.result.status = "InProgress";
          t.result.message = "still being deleted at the prune timeout";
          break;
        }
        await sleep(250, signal);
        signal.throwIfAborted();
      }
    }
    if (targets.length > 0) this.logger.info({ pruned: targets.length }, "objects removed from git pruned");
    return results;
  }

  private async resourceForEntry(group: string, kind: string, apiVersion: string, signal: AbortSignal): Promise<ResourceInfo | undefined> {
    if (apiVersion) return this.mapper.resource(apiVersion, kind, signal);
    const preferred = await this.kube
      .json<{ preferredVersion?: { groupVersion?: string } }>("GET", group === "" ? "/api/v1" : `/apis/${group}`, { signal })
      .catch(() => undefined);
    const gv = group === "" ? "v1" : preferred?.preferredVersion?.groupVersion;
    return gv ? this.mapper.resource(gv, kind, signal) : undefined;
  }

  /** Polls each object's status until all are Current; the first unready one at the deadline is the error. */
  private async awaitReady(
    ordered: PlannedObject[],
    results: Map<string, ObjectResult>,
    timeoutMs: number,
    signal: AbortSignal,
    superseded?: AbortSignal,
  ): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    const waiting = new Set(ordered);
    for (;;) {
      let failed: string | undefined;
      await eachLimit([...waiting], CONCURRENCY, async (p) => {
        let r: Readiness;
        try {
          r = readiness(await this.kube.json<Record<string, unknown>>("GET", resourcePath(p.info!, p.namespace, p.body.metadata.name), { signal }));
        } catch (err) {
          if (!(err instanceof KubeApiError)) throw err;
          r = { status: "InProgress", message: err.message };
        }
        const res = results.get(p.key)!;
        res.status = r.status;
        res.message = r.message;
        if (r.status === "Current") waiting.delete(p);
        if (r.status === "Failed") failed ??= `${p.body.kind} ${describe(p)} failed: ${r.message}`;
      });
      if (failed) return failed;
      if (waiting.size === 0) return undefined;
      if (superseded?.aborted) return "superseded by a newer commit before every object was ready";
      if (Date.now() >= deadline) {
        const first = [...waiting][0]!;
        return `reconcile timeout (${Math.round(timeoutMs / 1000)}s): ${waiting.size} object(s) not ready, e.g. ${first.body.kind} ${describe(first)}: ${results.get(first.key)!.message}`;
      }
      await sleep(Math.min(1000, Math.max(0, deadline - Date.now())), superseded ? AbortSignal.any([signal, superseded]) : signal);
      signal.throwIfAborted();
    }
  }
}

/** Throws the problems found (in file and line order, whatever order the checks ran in). */
function throwProblems(problems: ManifestError[]): void {
  if (problems.length === 0) return;
  problems.sort((a, b) => a.source.localeCompare(b.source) || (a.line ?? 0) - (b.line ?? 0));
  throw new ManifestsInvalidError(problems);
}

function describe(p: PlannedObject): string {
  return p.namespace ? `${p.namespace}/${p.body.metadata.name}` : p.body.metadata.name;
}

function result(p: PlannedObject, status: string, message: string): ObjectResult {
  const [group, version] = p.body.apiVersion.includes("/") ? p.body.apiVersion.split("/", 2) : ["", p.body.apiVersion];
  return { group: group!, version: version!, kind: p.body.kind, namespace: p.namespace, name: p.body.metadata.name, status, message, source: p.decoded.source };
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
