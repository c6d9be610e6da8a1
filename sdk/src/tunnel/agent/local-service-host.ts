import { create, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  AgentDescriptorSchema,
  MethodSchema,
  ServiceSchema,
  type AgentDescriptor,
} from "../../gen/gitlab/agent/reverse_tunnel/info/info_pb.js";
import { FrameReader, encodeFrame } from "../../util/grpc-frames.js";
import { headersToMeta, metaToHeaders, type MetaMap } from "../../util/metadata.js";

/** What a local call produces, in the order the tunnel's state machine requires. */
export type LocalCallEvent =
  | { kind: "header"; meta: MetaMap }
  | { kind: "message"; data: Uint8Array }
  | { kind: "trailer"; meta: MetaMap; error?: ConnectError };

export interface LocalServiceHostOptions {
  /** Largest message accepted from or returned to KAS. Default 16 MiB. */
  maxMessageBytes?: number;
  /** Server interceptors applied to every local service. */
  interceptors?: Interceptor[];
}

/**
 * The agent's in-process gRPC server. Services are registered as connect-es implementations; a
 * request arriving through a tunnel is run by invoking the router's gRPC handler directly with
 * length-prefixed bytes, exactly as if it had arrived over HTTP/2, so headers, trailers, status
 * codes, deadlines and cancellation behave as in any connect service.
 */
export class LocalServiceHost {
  private readonly router: ConnectRouter;
  private readonly handlers = new Map<string, UniversalHandler>();
  private readonly services: DescService[] = [];
  private readonly maxMessageBytes: number;
  private cachedDescriptor: AgentDescriptor | undefined;

  constructor(options: LocalServiceHostOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    this.router = createConnectRouter({
      grpc: true,
      grpcWeb: false,
      connect: false,
      readMaxBytes: this.maxMessageBytes,
      writeMaxBytes: this.maxMessageBytes,
      interceptors: options.interceptors,
    });
  }

  /** Registers a service implementation; call before the tunnel pool starts. */
  register<T extends DescService>(service: T, implementation: Parameters<ConnectRouter["service"]>[1]): this {
    const before = this.router.handlers.length;
    this.router.service(service, implementation as never);
    for (const handler of this.router.handlers.slice(before)) {
      this.handlers.set(handler.requestPath, handler);
    }
    this.services.push(service);
    this.cachedDescriptor = undefined;
    return this;
  }

  /** The descriptor sent on every tunnel: KAS routes a method only to tunnels that list it. */
  descriptor(): AgentDescriptor {
    // Sent on every tunnel (one per request): built once, until the next register().
    return (this.cachedDescriptor ??= create(AgentDescriptorSchema, {
      services: this.services.map((s) =>
        create(ServiceSchema, {
          name: s.typeName,
          methods: s.methods.map((m) => create(MethodSchema, { name: m.name })),
        }),
      ),
    }));
  }

  /**
   * Runs one call. `methodName` is the full path ("/pkg.Service/Method"); `messages` are the request
   * messages without framing. Events are yielded as the handler produces them; aborting `signal`
   * cancels the handler.
   */
  async *invoke(
    methodName: string,
    meta: MetaMap,
    messages: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): AsyncGenerator<LocalCallEvent> {
    const handler = this.handlers.get(methodName);
    if (!handler) {
      const error = new ConnectError(`method ${methodName} is not served by this agent`, Code.Unimplemented);
      yield { kind: "header", meta: {} };
      yield { kind: "trailer", meta: {}, error };
      return;
    }
    const header = metaToHeaders(meta);
    header.set("content-type", "application/grpc+proto");
    header.set("te", "trailers");
    const response = await handler({
      httpVersion: "2.0",
      method: "POST",
      url: `http://agent.local${methodName}`,
      header,
      body: framed(messages),
      signal,
    });
    if (response.status !== 200) {
      throw new ConnectError(`local handler answered HTTP ${response.status}`, Code.Internal);
    }
    const responseHeader = response.header ?? new Headers();
    yield { kind: "header", meta: headersToMeta(responseHeader) };
    // Trailers-only responses carry the status in the header.
    const headerError = findTrailerError(responseHeader);
    if (!headerError && response.body) {
      const reader = new FrameReader(Number.MAX_SAFE_INTEGER);
      for await (const chunk of response.body) {
        for (const data of reader.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) {
          yield { kind: "message", data };
        }
      }
    }
    const trailer = response.trailer ?? new Headers();
    const error = headerError ?? findTrailerError(trailer);
    yield { kind: "trailer", meta: headersToMeta(trailer), error };
  }
}

/** The request messages, length-prefixed, without an async generator per call. */
function framed(messages: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]() {
      const it = messages[Symbol.asyncIterator]();
      return {
        next: () =>
          it.next().then((r): IteratorResult<Uint8Array> => (r.done ? { done: true, value: undefined } : { done: false, value: encodeFrame(r.value) })),
        return: (value?: unknown) => (it.return ? it.return(value) : Promise.resolve({ done: true, value: undefined })) as Promise<IteratorResult<Uint8Array>>,
        throw: (error?: unknown) => (it.throw ? it.throw(error) : Promise.reject(error)) as Promise<IteratorResult<Uint8Array>>,
      };
    },
  };
}
