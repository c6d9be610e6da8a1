import type { Logger } from "pino";
import type { AuthenticatedAgent } from "../services/agent-tokens.js";

/**
 * An agent module's request as a platform module sees it (gitlab_access: the agent sends it
 * through KAS to `/api/v4/internal/kubernetes/modules/<module><path>`).
 */
export interface AgentModuleRequest {
  /** The agent that asks, authenticated by its token. */
  agent: AuthenticatedAgent;
  method: string;
  /** Module-relative path, e.g. "/policies_configuration". */
  path: string;
  query: URLSearchParams;
  headers: Headers;
  /** The whole request body (bounded by the internal API's body limit). */
  body: Uint8Array;
}

/** A platform module's answer. `json` (sent as application/json) takes precedence over `body`. */
export interface AgentModuleResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  json?: unknown;
}

export type AgentModuleHandler = (request: AgentModuleRequest) => AgentModuleResponse | Promise<AgentModuleResponse>;

/** The platform halves of agent modules (scanning, remote development, ...), by module name. */
export interface ModuleRequestService {
  /** Routes the requests of agent module `module` to `handler`; returns a function that removes it. */
  register(module: string, handler: AgentModuleHandler): () => void;
  /** Answers one request: 404 for a module nothing registered. */
  handle(module: string, request: AgentModuleRequest): Promise<AgentModuleResponse>;
}

/**
 * The module registry. A handler's failure is logged and answered 500 (its request headers, which
 * carry the agent's token, are not logged).
 */
export function createModuleRequestService(logger: Logger): ModuleRequestService {
  const handlers = new Map<string, AgentModuleHandler>();
  return {
    register(module, handler) {
      if (handlers.has(module)) throw new Error(`a handler for module ${module} is registered already`);
      handlers.set(module, handler);
      return () => {
        if (handlers.get(module) === handler) handlers.delete(module);
      };
    },
    async handle(module, request) {
      const handler = handlers.get(module);
      if (!handler) return { status: 404, json: { message: "404 Not Found" } };
      try {
        return await handler(request);
      } catch (err) {
        logger.error({ err, module, method: request.method, path: request.path, agentId: request.agent.agent.id }, "agent module request failed");
        return { status: 500, json: { message: "500 Internal Server Error" } };
      }
    },
  };
}

/** An answer as it goes on the wire: JSON or bytes, with its content type. */
export function encodeModuleResponse(response: AgentModuleResponse): { status: number; headers: Record<string, string>; body: Buffer } {
  const headers = { ...response.headers };
  let body: Buffer;
  if (response.json !== undefined) {
    body = Buffer.from(JSON.stringify(response.json));
    headers["content-type"] ??= "application/json";
  } else {
    body = typeof response.body === "string" ? Buffer.from(response.body) : Buffer.from(response.body ?? new Uint8Array());
  }
  return { status: response.status, headers, body };
}
