import express from "express";
import type { Request, RequestHandler, Response, Router } from "express";
import { MODULE_REQUEST_PATH_PREFIX } from "@kasbridge/sdk/platform-client";
import { guardRequestBody, type BodyLimit } from "../api/body-limit.js";
import { notFound } from "../api/http-errors.js";
import type { AuthenticatedAgent } from "../services/agent-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import { encodeModuleResponse, type AgentModuleResponse } from "./module-requests.js";

export interface ModuleRequestRoutesDeps {
  services: PlatformServices;
  kasJwt: RequestHandler;
  agentFromRequest(req: Request): Promise<AuthenticatedAgent>;
  bodyLimit: BodyLimit;
}

/** `<prefix><module><path>`: the module name is one (escaped) segment, the path the rest. */
const modulePath = new RegExp(`^${MODULE_REQUEST_PATH_PREFIX.replace(/[/]/g, "\\/")}([^/]+)(\\/.*)?$`);

/**
 * GitLab's `/api/v4/internal/kubernetes/modules/<module>/<path>` (any method): agent modules'
 * requests, which KAS forwards with the agent's token and its JWT (gitlab_access), answered by
 * the platform module registered for `<module>` (`services.moduleRequests`).
 */
export function registerModuleRequestRoutes(router: Router, deps: ModuleRequestRoutesDeps): void {
  const body = [guardRequestBody(deps.bodyLimit), express.raw({ type: () => true, limit: deps.bodyLimit.maxBytes })];
  router.all(modulePath, deps.kasJwt, ...body, async (req, res) => {
    const match = modulePath.exec(req.path)!;
    let module: string;
    try {
      module = decodeURIComponent(match[1]!);
    } catch {
      throw notFound();
    }
    const agent = await deps.agentFromRequest(req);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, v);
    }
    const response = await deps.services.moduleRequests.handle(module, {
      agent,
      method: req.method,
      path: match[2] ?? "/",
      query: new URLSearchParams(req.url.includes("?") ? req.url.slice(req.url.indexOf("?") + 1) : ""),
      headers,
      body: Buffer.isBuffer(req.body) ? new Uint8Array(req.body) : new Uint8Array(),
    });
    respond(res, response);
  });
}

function respond(res: Response, response: AgentModuleResponse): void {
  const { status, headers, body } = encodeModuleResponse(response);
  res.status(status).set(headers).send(body);
}
