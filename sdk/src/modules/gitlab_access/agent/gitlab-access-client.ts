import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import type { HttpRequestSchema } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { GitlabAccess, HeaderExtraSchema } from "../../../gen/gitlab/agent/gitlab_access/rpc/rpc_pb.js";
import { ValuesSchema, type Values } from "../../../gen/gitlab/agent/prototool/prototool_pb.js";
import { canonicalHeaderName } from "../../../http/http-codec.js";

/** One request of an agent module to the platform. */
export interface GitlabAccessRequest {
  /** Default "GET". */
  method?: string;
  /** Module-relative path, e.g. "/policies_configuration" (KAS sends it below `…/modules/<module>`). */
  path: string;
  query?: Record<string, string | readonly string[]>;
  headers?: Record<string, string | readonly string[]>;
  body?: Uint8Array | string;
  signal?: AbortSignal;
  /** Longest the whole exchange may take. Default: no limit. */
  timeoutMs?: number;
}

/** The platform's answer, body read in full. */
export interface GitlabAccessResponse {
  status: number;
  /** e.g. "200 OK". */
  statusLine: string;
  headers: Headers;
  body: Uint8Array;
  text(): string;
  json(): unknown;
}

export interface GitlabAccessClientOptions {
  /** Largest answer body read; a larger one fails the request with RESOURCE_EXHAUSTED. Default 16 MiB. */
  maxResponseBytes?: number;
  /** Largest request data frame; larger bodies are split. Default 1 MiB. */
  maxFrameBytes?: number;
}

export interface GitlabAccessClient {
  request(request: GitlabAccessRequest): Promise<GitlabAccessResponse>;
}

type RequestInit = MessageInitShape<typeof HttpRequestSchema>;

/**
 * The agent half of gitlab_access, for agent modules: HTTP requests to the platform's
 * `/api/v4/internal/kubernetes/modules/<moduleName>/…` through KAS
 * (`GitlabAccess/MakeRequest`), authenticated as this agent. Use it with the module's context:
 * `gitlabAccessClient(ctx.transport, "starboard_vulnerability")`.
 */
export function gitlabAccessClient(transport: Transport, moduleName: string, options: GitlabAccessClientOptions = {}): GitlabAccessClient {
  if (moduleName === "") throw new Error("gitlabAccessClient needs a module name");
  const client = createClient(GitlabAccess, transport);
  const maxResponseBytes = options.maxResponseBytes ?? 16 * 1024 * 1024;
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const extra = anyPack(HeaderExtraSchema, create(HeaderExtraSchema, { moduleName }));

  async function* messages(request: GitlabAccessRequest): AsyncIterable<RequestInit> {
    const body = typeof request.body === "string" ? new TextEncoder().encode(request.body) : request.body;
    yield {
      message: {
        case: "header",
        value: {
          request: {
            method: (request.method ?? "GET").toUpperCase(),
            urlPath: request.path,
            header: valuesMap(request.headers, canonicalHeaderName),
            query: valuesMap(request.query, (name) => name),
          },
          extra,
          ...(body ? { contentLength: BigInt(body.byteLength) } : {}),
        },
      },
    };
    for (let offset = 0; body && offset < body.byteLength; offset += maxFrameBytes) {
      yield { message: { case: "data", value: { data: body.subarray(offset, offset + maxFrameBytes) } } };
    }
    yield { message: { case: "trailer", value: {} } };
  }

  return {
    async request(request) {
      let head: { status: number; statusLine: string; headers: Headers } | undefined;
      const chunks: Uint8Array[] = [];
      let size = 0;
      for await (const response of client.makeRequest(messages(request), { signal: request.signal, timeoutMs: request.timeoutMs })) {
        const message = response.message;
        if (message.case === "header") {
          const r = message.value.response;
          const headers = new Headers();
          for (const [name, values] of Object.entries(r?.header ?? {})) for (const value of values.value) headers.append(name, value);
          head = { status: r?.statusCode ?? 0, statusLine: r?.status ?? "", headers };
        } else if (message.case === "data") {
          if (!head) throw new ConnectError("KAS sent data before the response header", Code.Internal);
          size += message.value.data.byteLength;
          if (size > maxResponseBytes) throw new ConnectError(`the platform's answer exceeds ${maxResponseBytes} bytes`, Code.ResourceExhausted);
          chunks.push(message.value.data);
        }
      }
      if (!head) throw new ConnectError("KAS answered no response header", Code.Internal);
      const body = Buffer.concat(chunks);
      return { ...head, body, text: () => body.toString("utf8"), json: () => JSON.parse(body.toString("utf8")) as unknown };
    },
  };
}

function valuesMap(entries: Record<string, string | readonly string[]> | undefined, key: (name: string) => string): { [key: string]: Values } {
  const out: { [key: string]: Values } = {};
  for (const [name, value] of Object.entries(entries ?? {})) {
    out[key(name)] = create(ValuesSchema, { value: typeof value === "string" ? [value] : [...value] });
  }
  return out;
}
