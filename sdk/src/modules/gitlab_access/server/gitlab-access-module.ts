import { setMaxListeners } from "node:events";
import { type MessageInitShape } from "@bufbuild/protobuf";
import { anyIs, anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { bearerToken } from "../../../auth/bearer.js";
import type { HttpRequest, HttpResponseSchema } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { GitlabAccess, HeaderExtraSchema } from "../../../gen/gitlab/agent/gitlab_access/rpc/rpc_pb.js";
import { mapToMultiMap, multiMapToMap, valuesToMultiMap } from "../../../http/http-codec.js";
import { RequestPathError, assertNoDotSegments } from "../../../http/request-path.js";
import { platformErrorToConnectError } from "../../../kas/agent-authenticator.js";
import type { KasModule, KasModuleContext } from "../../../kas/kas-module.js";
import type { ModuleRequest } from "../../../platform-client/platform-client.js";
import { KAS_API_REQUEST_HEADER } from "../../../auth/jwt.js";
import { ATTR_AGENT_ID, ATTR_AGENT_MODULE, ATTR_GRPC_STATUS, rpcSpan } from "../../../tracing/semconv.js";
import { SpanKind, SpanStatusCode, type Span } from "../../../tracing/tracing.js";

export interface GitlabAccessServerModuleOptions {
  /** Largest response data frame sent to the agent; larger chunks are split. Default 1 MiB. */
  maxFrameBytes?: number;
}

type ResponseInit = MessageInitShape<typeof HttpResponseSchema>;

/** The span name and RPC attributes of `GitlabAccess/MakeRequest`. */
const MAKE_REQUEST_RPC = rpcSpan(`/${GitlabAccess.typeName}/MakeRequest`);

/** Request headers an agent's request never carries on to the platform: KAS sets its own credentials. */
const credentialHeaders = new Set(["authorization", "cookie", KAS_API_REQUEST_HEADER.toLowerCase()]);

/**
 * The KAS half of gitlab_access (`gitlab.agent.gitlab_access.rpc.GitlabAccess/MakeRequest`): an
 * agent module's HTTP request to the platform, which KAS sends to the platform's
 * `/api/v4/internal/kubernetes/modules/<module><url_path>` with the agent's token and KAS's JWT
 * (`PlatformClient.makeModuleRequest`), streaming the answer back. Scanning and remote development
 * report and reconcile through it.
 */
export function gitlabAccessServerModule(options: GitlabAccessServerModuleOptions = {}): KasModule {
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  return {
    name: "gitlab_access",
    agentServices: [GitlabAccess],
    registerAgentServices(router, ctx) {
      router.service(GitlabAccess, {
        makeRequest: (requests: AsyncIterable<HttpRequest>, hctx: HandlerContext) => makeRequest(ctx, requests, hctx, maxFrameBytes),
      });
    },
  };
}

async function* makeRequest(
  ctx: KasModuleContext,
  requests: AsyncIterable<HttpRequest>,
  hctx: HandlerContext,
  maxFrameBytes: number,
): AsyncIterable<ResponseInit> {
  // A child of the agent's span when its metadata carries a traceparent; the platform gets this one's.
  const span = ctx.tracing.startSpan(MAKE_REQUEST_RPC.name, SpanKind.SERVER, ctx.tracing.fromHeaders(hctx.requestHeader));
  try {
    yield* forwardToPlatform(ctx, requests, hctx, maxFrameBytes, span);
    if (span.isRecording()) span.setAttribute(ATTR_GRPC_STATUS, 0);
  } catch (error) {
    if (span.isRecording()) {
      const ce = ConnectError.from(error);
      span.setAttribute(ATTR_GRPC_STATUS, ce.code);
      span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
    }
    throw error;
  } finally {
    span.end();
  }
}

async function* forwardToPlatform(
  ctx: KasModuleContext,
  requests: AsyncIterable<HttpRequest>,
  hctx: HandlerContext,
  maxFrameBytes: number,
  span: Span,
): AsyncIterable<ResponseInit> {
  const info = await ctx.auth.authenticate(hctx.requestHeader, hctx.signal);
  const platform = ctx.platform;
  if (!platform.makeModuleRequest) throw new ConnectError("this KAS's platform takes no module requests", Code.Unimplemented);
  // The call ends with the agent's, with a revocation of its token, or with KAS.
  const watch = ctx.auth.watchToken(info);
  const signal = AbortSignal.any([hctx.signal, watch.signal, ctx.shutdownSignal]);
  setMaxListeners(0, signal);
  try {
    const input = requests[Symbol.asyncIterator]();
    // Authenticated above, so the header holds the agent's token.
    const request = await readHeader(input, bearerToken(hctx.requestHeader.get("authorization"))!);
    ctx.logger.debug({ agentId: info.agentId, module: request.module, method: request.method, path: request.urlPath }, "module request");
    if (span.isRecording()) {
      span.setAttributes({ ...MAKE_REQUEST_RPC.attributes, [ATTR_AGENT_ID]: info.agentId, [ATTR_AGENT_MODULE]: request.module, "http.request.method": request.method });
      ctx.tracing.injectMultiMap(span, request.headers);
    }
    let response;
    try {
      response = await platform.makeModuleRequest(request, signal);
    } catch (error) {
      signal.throwIfAborted();
      throw platformErrorToConnectError(error);
    }
    yield {
      message: {
        case: "header",
        value: {
          response: {
            statusCode: response.status,
            status: `${response.status} ${response.statusText}`.trim(),
            header: multiMapToMap(response.headers),
          },
        },
      },
    };
    for await (const chunk of response.body) {
      for (let offset = 0; offset < chunk.byteLength; offset += maxFrameBytes) {
        yield { message: { case: "data", value: { data: chunk.subarray(offset, offset + maxFrameBytes) } } };
      }
    }
    yield { message: { case: "trailer", value: {} } };
  } finally {
    watch.release();
  }
}

/** The request's header message as the agent's ModuleRequest (its body: the rest of `input`). Throws INVALID_ARGUMENT. */
async function readHeader(input: AsyncIterator<HttpRequest>, agentToken: string): Promise<ModuleRequest> {
  const first = await input.next();
  if (first.done || first.value.message.case !== "header") {
    throw new ConnectError(`expected the request header first, got ${first.done ? "nothing" : (first.value.message.case ?? "an empty message")}`, Code.InvalidArgument);
  }
  const header = first.value.message.value;
  const extra = header.extra && anyIs(header.extra, HeaderExtraSchema) ? anyUnpack(header.extra, HeaderExtraSchema) : undefined;
  const module = extra?.moduleName ?? "";
  if (module === "") throw new ConnectError("the request header names no module (extra: gitlab_access HeaderExtra.module_name)", Code.InvalidArgument);
  const request = header.request;
  if (!request || !/^[A-Z]+$/.test(request.method)) throw new ConnectError("the request has no valid HTTP method", Code.InvalidArgument);
  if (!request.urlPath.startsWith("/")) throw new ConnectError("the request's url_path must start with /", Code.InvalidArgument);
  try {
    // The path is joined below the module's prefix: a dot segment would climb out of it.
    assertNoDotSegments(request.urlPath);
  } catch (error) {
    if (error instanceof RequestPathError) throw new ConnectError(error.message, Code.InvalidArgument);
    throw error;
  }
  return {
    agentToken,
    module,
    method: request.method,
    urlPath: request.urlPath,
    query: valuesToMultiMap(request.query),
    headers: mapToMultiMap(request.header, { drop: (name) => credentialHeaders.has(name) }),
    body: requestBody(input),
  };
}

/** The data frames after the header, up to the trailer. */
async function* requestBody(input: AsyncIterator<HttpRequest>): AsyncIterable<Uint8Array> {
  for (;;) {
    const next = await input.next();
    if (next.done) return;
    const message = next.value.message;
    if (message.case === "trailer") return;
    if (message.case !== "data") throw new ConnectError(`unexpected ${message.case ?? "empty message"} in the request body`, Code.InvalidArgument);
    yield message.value.data;
  }
}
