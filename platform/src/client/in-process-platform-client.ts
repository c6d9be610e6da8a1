import { STATUS_CODES } from "node:http";
import { allowedAgentsForJobEntity, proxyUserAuthorizationEntity } from "../api/entities.js";
import {
  PlatformError,
  parseJobAllowedAgents,
  parseProxyUserAuthorization,
  parseWorkspaceAccess,
  type WorkspaceAccessAnswer,
  type AgentConfigurationSnapshot,
  type AgentInfo,
  type JobAllowedAgents,
  type ModuleRequest,
  type ModuleResponse,
  type PlatformClient,
  type ProxyUserAuthorizationAnswer,
  type UsageMetricsPayload,
  type KasAuditEvent,
} from "@kasbridge/sdk/platform-client";
import { bodyTooLargeMessage, type BodyLimit } from "../api/body-limit.js";
import { DEFAULT_INTERNAL_API_BODY_LIMIT_BYTES } from "../api/internal-api.js";
import { encodeModuleResponse, type AgentModuleResponse } from "../module-requests/module-requests.js";
import type { PlatformServices } from "../services/platform-services.js";
import { workspaceAccessEntity } from "../remote-development/workspace-access-api.js";
import { inProcessGitopsMethods } from "../gitops/in-process-gitops-client.js";

/**
 * PlatformClient backed directly by our platform services, for a KAS and platform in one process.
 * Revocations and configuration changes are delivered synchronously from the call that made them,
 * right after its transaction commits.
 */
export interface InProcessPlatformClientOptions {
  /** Largest body of an agent module's request (gitlab_access); larger: 413. Default 64 KiB, as the internal API. */
  maxModuleRequestBytes?: number;
}

export function createInProcessPlatformClient(services: PlatformServices, options: InProcessPlatformClientOptions = {}): PlatformClient {
  const bodyLimit: BodyLimit = {
    maxBytes: options.maxModuleRequestBytes ?? DEFAULT_INTERNAL_API_BODY_LIMIT_BYTES,
    setting: "InProcessPlatformClientOptions.maxModuleRequestBytes",
  };
  return {
    // verify_project_access, project_info, the repository reads and status reports of Flux and GitOps.
    ...inProcessGitopsMethods(services),

    async getAgentInfo(agentToken: string, signal?: AbortSignal): Promise<AgentInfo> {
      signal?.throwIfAborted();
      const found = await fromStore(() => services.agentTokens.authenticate(agentToken));
      if (!found) throw new PlatformError("unauthenticated", "unknown or revoked agent token");
      return {
        agentId: found.agent.id,
        agentName: found.agent.name,
        projectId: found.project.id,
        projectPath: found.project.pathWithNamespace,
        defaultBranch: found.project.defaultBranch,
        tokenId: found.token.id,
      };
    },

    watchTokenRevocations(onRevoked, signal) {
      if (signal.aborted) return;
      const unsubscribe = services.revocations.subscribe(onRevoked);
      signal.addEventListener("abort", unsubscribe, { once: true });
    },

    async getAgentConfiguration(agentId: number, signal?: AbortSignal): Promise<AgentConfigurationSnapshot> {
      signal?.throwIfAborted();
      const snapshot = await fromStore(() => services.agentConfigs.snapshot(agentId));
      if (!snapshot) throw new PlatformError("not_found", `agent ${agentId} not found`);
      return snapshot;
    },

    watchAgentConfigurations(onChange, signal) {
      if (signal.aborted) return;
      const unsubscribe = services.agentConfigs.subscribe((change) => onChange(change.agentId));
      signal.addEventListener("abort", unsubscribe, { once: true });
    },

    // Both answers go through the same entities and parsers as the HTTP API, so the two clients agree.
    async allowedAgentsForJob(jobToken: string, signal?: AbortSignal): Promise<JobAllowedAgents> {
      signal?.throwIfAborted();
      const allowed = await fromStore(() => services.ciJobs.allowedAgentsForJob(jobToken));
      if (!allowed) throw new PlatformError("unauthenticated", "unknown, expired or finished job token");
      return parseJobAllowedAgents(JSON.parse(JSON.stringify(allowedAgentsForJobEntity(allowed))));
    },

    async authorizeProxyUser(request, signal?: AbortSignal): Promise<ProxyUserAuthorizationAnswer> {
      signal?.throwIfAborted();
      const result = await fromStore(() =>
        services.proxyUserAuthorization.authorizeProxyUser({
          agentId: request.agentId,
          accessType: request.accessType,
          accessKey: request.accessKey,
        }),
      );
      if (!result.ok) {
        const kind = result.status === 401 ? "unauthenticated" : result.status === 404 ? "not_found" : "forbidden";
        throw new PlatformError(kind, `authorize_proxy_user: ${result.message}`);
      }
      return parseProxyUserAuthorization(JSON.parse(JSON.stringify(proxyUserAuthorizationEntity(result.authorization))));
    },

    async authorizeWorkspaceAccess(request, signal?: AbortSignal): Promise<WorkspaceAccessAnswer> {
      signal?.throwIfAborted();
      const result = await fromStore(() => services.workspaceAccess.authorize(request));
      if (!result.ok) {
        const kind = result.status === 401 ? "unauthenticated" : result.status === 404 ? "not_found" : "forbidden";
        throw new PlatformError(kind, `workspace access: ${result.message}`);
      }
      return parseWorkspaceAccess(JSON.parse(JSON.stringify(workspaceAccessEntity(result.grant))));
    },

    async sendUsageMetrics(payload: UsageMetricsPayload, signal?: AbortSignal): Promise<void> {
      signal?.throwIfAborted();
      await fromStore(() => services.usageMetrics.record(payload));
    },

    async recordAuditEvents(events: KasAuditEvent[], signal?: AbortSignal): Promise<void> {
      signal?.throwIfAborted();
      await fromStore(() => services.audit.recordFromKas({ events }));
    },

    // As the internal API answers it: 401 for an unknown token, 413 over the body limit.
    async makeModuleRequest(request: ModuleRequest, signal?: AbortSignal): Promise<ModuleResponse> {
      signal?.throwIfAborted();
      const agent = await fromStore(() => services.agentTokens.authenticate(request.agentToken));
      if (!agent) return moduleResponse({ status: 401, json: { message: "401 Unauthorized" } });
      const body = await readBody(request.body, bodyLimit);
      if (!body) {
        return moduleResponse({ status: 413, json: { message: `413 Request Entity Too Large - ${bodyTooLargeMessage(bodyLimit)}` } });
      }
      const headers = new Headers();
      for (const [name, values] of Object.entries(request.headers)) for (const value of values) headers.append(name, value);
      const query = new URLSearchParams();
      for (const [name, values] of Object.entries(request.query)) for (const value of values) query.append(name, value);
      signal?.throwIfAborted();
      return moduleResponse(
        await services.moduleRequests.handle(request.module, { agent, method: request.method, path: request.urlPath, query, headers, body }),
      );
    },
  };
}

/** `work()`, a store failure reported as PlatformError("unavailable"). */
async function fromStore<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw new PlatformError("unavailable", "platform store unavailable", { cause: err });
  }
}

/** The whole body, or undefined once it is larger than the limit. */
async function readBody(body: AsyncIterable<Uint8Array>, limit: BodyLimit): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > limit.maxBytes) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function moduleResponse(response: AgentModuleResponse): ModuleResponse {
  const { status, headers, body } = encodeModuleResponse(response);
  return {
    status,
    statusText: STATUS_CODES[status] ?? "",
    headers: Object.fromEntries(Object.entries(headers).map(([name, value]) => [name, [value]])),
    body: (async function* () {
      if (body.byteLength > 0) yield body;
    })(),
  };
}
