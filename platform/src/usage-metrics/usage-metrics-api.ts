/**
 * kasbridge extension: the usage events KAS reported (GitLab keeps them in its service ping),
 * `GET /api/v4/usage_metrics/kubernetes[?since=YYYY-MM-DD]`, admins only.
 */
import type { Router } from "express";
import { paramError } from "../api/http-errors.js";
import type { RestRouteDeps } from "../api/rest-route-deps.js";

export function registerUsageMetricsRoutes(router: Router, deps: RestRouteDeps): void {
  router.get("/api/v4/usage_metrics/kubernetes", deps.read, deps.requireAdmin, async (req, res) => {
    const raw = req.query.since;
    let since: Date | undefined;
    if (raw !== undefined) {
      if (typeof raw !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(raw) || Number.isNaN(Date.parse(raw))) throw paramError("since must be a date (YYYY-MM-DD)");
      since = new Date(`${raw}T00:00:00Z`);
    }
    res.json(await deps.services.usageMetrics.totals({ since }));
  });
}
