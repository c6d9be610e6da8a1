import type { UsageMetricsPayload } from "@kasbridge/sdk/platform-client";
import { invalid } from "../services/errors.js";
import { inTransaction, type ServiceContext } from "../services/context.js";

/** Event names: what GitLab's KAS sends (k8s_api_proxy_request, …) and whatever a newer KAS adds. */
const EVENT_NAME = /^[a-z][a-z0-9_]{0,99}$/;

/** Totals of the usage events KAS reported, since `since` (unique counters: distinct ids). */
export interface UsageTotals {
  counters: Record<string, number>;
  unique_counters: Record<string, number>;
}

export interface UsageMetricsService {
  /** Validates and stores one report of KAS (deltas): counters add up, unique ids are kept per day. */
  record(payload: unknown): Promise<void>;
  /** Totals over everything stored, or from `since` (a day) on. */
  totals(options?: { since?: Date }): Promise<UsageTotals>;
}

/**
 * The platform's half of GitLab's usage ping from KAS (`POST /api/v4/internal/kubernetes/usage_metrics`):
 * counters per event and day, and the distinct ids (users, agents, projects) of unique counters
 * per event and day, so an operator sees usage over time (REST `GET /api/v4/usage_metrics/kubernetes`).
 */
export function createUsageMetricsService(ctx: ServiceContext): UsageMetricsService {
  const { knex } = ctx;
  return {
    async record(raw) {
      const payload = parsePayload(raw);
      const day = ctx.now().toISOString().slice(0, 10);
      await inTransaction(knex, async (trx) => {
        for (const [name, value] of Object.entries(payload.counters ?? {})) {
          if (value === 0) continue;
          await trx("usage_counters")
            .insert({ name, day, value })
            .onConflict(["name", "day"])
            .merge({ value: trx.raw("?? + ?", ["usage_counters.value", value]) });
        }
        for (const [name, ids] of Object.entries(payload.unique_counters ?? {})) {
          const rows = [...new Set(ids)].map((value) => ({ name, day, value }));
          for (let i = 0; i < rows.length; i += 200) await trx("usage_unique_values").insert(rows.slice(i, i + 200)).onConflict(["name", "day", "value"]).ignore();
        }
      });
    },
    async totals(options = {}) {
      const since = options.since?.toISOString().slice(0, 10);
      const counters = await knex("usage_counters")
        .select("name")
        .sum({ total: "value" })
        .modify((q) => (since ? q.where("day", ">=", since) : q))
        .groupBy("name")
        .orderBy("name");
      const uniques = await knex("usage_unique_values")
        .select("name")
        .countDistinct({ total: "value" })
        .modify((q) => (since ? q.where("day", ">=", since) : q))
        .groupBy("name")
        .orderBy("name");
      return {
        counters: Object.fromEntries((counters as Array<{ name: string; total: unknown }>).map((r) => [r.name, Number(r.total)])),
        unique_counters: Object.fromEntries((uniques as Array<{ name: string; total: unknown }>).map((r) => [r.name, Number(r.total)])),
      };
    },
  };
}

/** GitLab's body: `counters` {name: int}, `unique_counters` {name: [int]}; anything else is a 400 naming the key. */
export function parsePayload(raw: unknown): UsageMetricsPayload {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid("the body must be a JSON object");
  const body = raw as Record<string, unknown>;
  const out: UsageMetricsPayload = {};
  for (const key of Object.keys(body)) if (key !== "counters" && key !== "unique_counters") throw invalid(`unknown key ${key}`);
  if (body.counters !== undefined) {
    out.counters = {};
    for (const [name, value] of Object.entries(mapping(body.counters, "counters"))) {
      checkName(name, "counters");
      if (!isCount(value)) throw invalid(`counters.${name} must be a non-negative integer`);
      out.counters[name] = value;
    }
  }
  if (body.unique_counters !== undefined) {
    out.unique_counters = {};
    for (const [name, value] of Object.entries(mapping(body.unique_counters, "unique_counters"))) {
      checkName(name, "unique_counters");
      if (!Array.isArray(value) || !value.every((v) => Number.isSafeInteger(v))) throw invalid(`unique_counters.${name} must be an array of integers`);
      out.unique_counters[name] = value as number[];
    }
  }
  return out;
}

function mapping(value: unknown, key: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(`${key} must be an object`);
  return value as Record<string, unknown>;
}

function checkName(name: string, key: string): void {
  if (!EVENT_NAME.test(name)) throw invalid(`${key}: invalid event name ${JSON.stringify(name.slice(0, 100))}`);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}
