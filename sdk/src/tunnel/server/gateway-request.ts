import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { FrameReader } from "../../grpc/grpc-frames.js";
import { parseGrpcTimeout } from "../../grpc/grpc-timeout.js";
import { headersToMeta, nodeHeadersToHeaders, type MetaMap } from "../../util/metadata.js";

/** Metadata naming the agent a call is for (GitLab's kas-hop routing key). */
export const routingAgentIdHeader = "kas-hop-routing-agent-id";

/** A gRPC call that arrived at a gateway (internal API 8153, private API 8155), checked. */
export interface GatewayRequest {
  agentId: number;
  /** "/<service>/<method>". */
  method: string;
  /** The caller's metadata as the agent gets it: without `authorization` and `kas-hop-*` keys. */
  meta: MetaMap;
  /** The caller's request messages, in its grpc-encoding. */
  reader: FrameReader;
  /** The caller's `grpc-timeout`, if any. */
  timeoutMs: number | undefined;
}

/**
 * Refuses what is not gRPC (POST, application/grpc*) with HTTP 415; returns whether it did.
 */
export function refuseNonGrpc(stream: ServerHttp2Stream, rawHeaders: IncomingHttpHeaders): boolean {
  const contentType = String(rawHeaders["content-type"] ?? "");
  if (rawHeaders[":method"] === "POST" && contentType.startsWith("application/grpc")) return false;
  stream.respond({ ":status": 415, "content-type": "text/plain" });
  stream.end("gRPC only (application/grpc over POST)");
  return true;
}

/** Checks the caller's credentials, the routing id and the method; throws a ConnectError to refuse. */
export async function readGatewayRequest(
  rawHeaders: IncomingHttpHeaders,
  authorize: (headers: Headers) => Promise<void>,
  maxMessageBytes: number,
): Promise<GatewayRequest> {
  const headers = nodeHeadersToHeaders(rawHeaders);
  await authorize(headers);
  return parseGatewayRequest(String(rawHeaders[":path"] ?? ""), headers, maxMessageBytes);
}

/** Checks the routing id and the method of an authorized call; throws a ConnectError to refuse. */
export function parseGatewayRequest(method: string, headers: Headers, maxMessageBytes: number): GatewayRequest {
  const agentId = parseAgentId(headers.get(routingAgentIdHeader));
  if (!/^\/[^/]+\/[^/]+$/.test(method)) throw new ConnectError(`malformed method path "${method}"`, Code.InvalidArgument);
  return {
    agentId,
    method,
    meta: headersToMeta(headers, (name) => name === "authorization" || name.startsWith("kas-hop-")),
    reader: new FrameReader(maxMessageBytes, headers.get("grpc-encoding") ?? "identity"),
    timeoutMs: parseGrpcTimeout(headers.get("grpc-timeout")),
  };
}

function parseAgentId(value: string | null): number {
  const id = value === null ? NaN : Number(value);
  if (!Number.isSafeInteger(id) || id <= 0) {
    throw new ConnectError(`missing or invalid ${routingAgentIdHeader} metadata`, Code.InvalidArgument);
  }
  return id;
}
