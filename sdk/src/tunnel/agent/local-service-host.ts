import { create, fromBinary, isMessage, toBinary, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createConnectRouter,
  createContextValues,
  createServiceImplSpec,
  type ConnectRouter,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  AgentDescriptorSchema,
  MethodSchema,
  ServiceSchema,
  type AgentDescriptor,
} from "../../gen/gitlab/agent/reverse_tunnel/info/info_pb.js";
import { FrameReader, encodeFrame } from "../../grpc/grpc-frames.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../../grpc/limits.js";
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

/** A method called without the router (see {@link LocalServiceHost}). */
interface DirectMethod {
  service: DescService;
  method: DescMethod;
  /** Takes a message (unary, server streaming) or an async iterable of them (client streaming, bidi). */
  impl: (request: unknown, context: HandlerContext) => unknown;
}

/**
 * The agent's in-process gRPC server. Services are registered as connect-es implementations; a
 * request arriving through a tunnel is run by invoking the router's gRPC handler directly with
 * length-prefixed bytes, exactly as if it had arrived over HTTP/2, so headers, trailers, status
 * codes, deadlines and cancellation behave as in any connect service.
 *
 * Methods of a host without interceptors skip the router: requests are decoded (size-checked, as
 * the router does, one at a time as the implementation pulls them, so the tunnel's incoming queue
 * keeps its backpressure) and the implementation is called with a handler context of its own
 * (request and response headers, trailers, the call's signal); its output is encoded as the caller
 * pulls events. That is the same contract at a fraction of the CPU (no handler pipeline of async
 * generators, envelopes and linked signals per call); local-service-host.test.ts compares the two.
 */
export class LocalServiceHost {
  private readonly router: ConnectRouter;
  private readonly handlers = new Map<string, UniversalHandler>();
  private readonly direct: Map<string, DirectMethod> | undefined;
  private readonly services: DescService[] = [];
  private readonly maxMessageBytes: number;
  private cachedDescriptor: AgentDescriptor | undefined;

  constructor(options: LocalServiceHostOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.router = createConnectRouter({
      grpc: true,
      grpcWeb: false,
      connect: false,
      readMaxBytes: this.maxMessageBytes,
      writeMaxBytes: this.maxMessageBytes,
      interceptors: options.interceptors,
    });
    // Interceptors wrap the router's handlers, so with any configured every call goes through them.
    if ((options.interceptors ?? []).length === 0) this.direct = new Map();
  }

  /** Registers a service implementation; call before the tunnel pool starts. */
  register<T extends DescService>(service: T, implementation: Parameters<ConnectRouter["service"]>[1]): this {
    const before = this.router.handlers.length;
    this.router.service(service, implementation as never);
    for (const handler of this.router.handlers.slice(before)) {
      this.handlers.set(handler.requestPath, handler);
    }
    if (this.direct) {
      const spec = createServiceImplSpec(service, implementation as never);
      for (const { method, impl } of Object.values(spec.methods)) {
        this.direct.set(`/${service.typeName}/${method.name}`, { service, method, impl } as DirectMethod);
      }
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
    const direct = this.direct?.get(methodName);
    if (direct) {
      yield* this.invokeDirect(direct, methodName, meta, messages, signal);
      return;
    }
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

  /** Runs a method without the router (same events as through it). */
  private async *invokeDirect(
    { service, method, impl }: DirectMethod,
    methodName: string,
    meta: MetaMap,
    messages: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): AsyncGenerator<LocalCallEvent> {
    const context: HandlerContext = {
      service,
      method,
      signal,
      timeoutMs: () => undefined,
      requestMethod: "POST",
      requestHeader: metaToHeaders(meta),
      responseHeader: new Headers(),
      responseTrailer: new Headers(),
      protocolName: "grpc",
      values: createContextValues(),
      url: `http://agent.local${methodName}`,
    };
    const encode = (output: unknown): Uint8Array => {
      const message = isMessage(output, method.output) ? output : create(method.output, output as never);
      const bytes = toBinary(method.output, message);
      if (bytes.byteLength > this.maxMessageBytes) {
        throw new ConnectError(`message size ${bytes.byteLength} is larger than configured writeMaxBytes ${this.maxMessageBytes}`, Code.ResourceExhausted);
      }
      return bytes;
    };
    const kind = method.methodKind;
    let headerSent = false;
    let error: ConnectError | undefined;
    try {
      const input = decodedInput(method.input, messages, this.maxMessageBytes);
      const request = kind === "unary" || kind === "server_streaming" ? await singleRequest(input, kind === "unary" ? "unary" : "server-streaming") : input;
      const result = impl(request, context);
      if (kind === "unary" || kind === "client_streaming") {
        const data = encode(await result);
        yield { kind: "header", meta: headersToMeta(context.responseHeader) };
        headerSent = true;
        yield { kind: "message", data };
      } else {
        for await (const output of result as AsyncIterable<unknown>) {
          const data = encode(output);
          if (!headerSent) {
            yield { kind: "header", meta: headersToMeta(context.responseHeader) };
            headerSent = true;
          }
          yield { kind: "message", data };
        }
      }
    } catch (e) {
      // As the router's gRPC handler: anything but a ConnectError is reported as INTERNAL "internal error".
      error = e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
      error.metadata.forEach((value, name) => context.responseTrailer.append(name, value));
    }
    if (!headerSent) yield { kind: "header", meta: headersToMeta(context.responseHeader) };
    yield { kind: "trailer", meta: headersToMeta(context.responseTrailer), error };
  }
}

/** The one request message of a unary or server-streaming call (connect's checks, in its order). */
async function singleRequest(input: AsyncIterable<unknown>, kind: string): Promise<unknown> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) throw new ConnectError(`protocol error: missing input message for ${kind} method`, Code.Unimplemented);
  const second = await it.next();
  if (!second.done) throw new ConnectError(`protocol error: received extra input message for ${kind} method`, Code.Unimplemented);
  return first.value;
}

/**
 * The request messages decoded one at a time as the implementation pulls them (a slow handler holds
 * the tunnel's incoming queue full, which holds back KAS), each size-checked and parsed with the
 * router's errors. Returning or throwing into it is passed on to `messages`. No async generator per
 * call: this is the agent's hottest path for the Kubernetes API proxy.
 */
function decodedInput(schema: DescMessage, messages: AsyncIterable<Uint8Array>, maxBytes: number): AsyncIterable<unknown> {
  const decode = (r: IteratorResult<Uint8Array>): IteratorResult<unknown> => {
    if (r.done) return { done: true, value: undefined };
    const bytes = r.value;
    if (bytes.byteLength > maxBytes) {
      throw new ConnectError(`message size ${bytes.byteLength} is larger than configured readMaxBytes ${maxBytes}`, Code.ResourceExhausted);
    }
    try {
      return { done: false, value: fromBinary(schema, bytes) };
    } catch (e) {
      throw new ConnectError(`parse binary: ${e instanceof Error ? e.message : String(e)}`, Code.Internal);
    }
  };
  return mapped(messages, decode);
}

/** `source` with every result passed through `map`, as a plain iterator (no async generator). */
function mapped<T, U>(source: AsyncIterable<T>, map: (result: IteratorResult<T>) => IteratorResult<U>): AsyncIterable<U> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      return {
        next: () => it.next().then(map),
        return: (value?: unknown) => (it.return ? it.return(value) : Promise.resolve({ done: true, value: undefined })) as Promise<IteratorResult<U>>,
        throw: (error?: unknown) => (it.throw ? it.throw(error) : Promise.reject(error)) as Promise<IteratorResult<U>>,
      };
    },
  };
}

/** The request messages, length-prefixed, without an async generator per call. */
function framed(messages: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return mapped(messages, (r): IteratorResult<Uint8Array> => (r.done ? { done: true, value: undefined } : { done: false, value: encodeFrame(r.value) }));
}
