import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ConnectRequestSchema, type ConnectRequest, type ConnectResponse } from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { AgentDescriptor } from "../../gen/gitlab/agent/reverse_tunnel/info/info_pb.js";
import { AsyncQueue } from "../../util/async-queue.js";
import { statusFromError } from "../rpc-status.js";
import type { MetaMap } from "../../util/metadata.js";
import { ATTR_AGENT_MODULE, ATTR_GRPC_STATUS, rpcSpan } from "../../tracing/semconv.js";
import { SpanKind, SpanStatusCode, type Span, type Tracing } from "../../tracing/tracing.js";
import type { LocalServiceHost } from "./local-service-host.js";
import type { TunnelStream, TunnelStreamOpener } from "./tunnel-stream.js";

/** How one tunnel stream ended. */
export type TunnelOutcome =
  /** KAS closed the stream without sending a request (e.g. it is shutting down). */
  | "closed"
  /** The tunnel carried one request to the end (successfully or with a call error). */
  | "served"
  /** The agent closed the idle stream (pool shrinking or shutting down). */
  | "aborted";

export interface AgentTunnelHooks {
  /** The stream is open and waiting for a request. */
  onIdle(): void;
  /** A request arrived: the pool should open a replacement. */
  onActive(methodName: string): void;
  /** The call ended with this gRPC status code (0 when it succeeded). */
  onCallEnd?(methodName: string, code: Code | 0): void;
  /** Spans of the calls served, children of the `traceparent` KAS sent in RequestInfo's metadata. */
  tracing?: Tracing;
  /** The module serving a method, for the span's `gitlab.agent.module`. */
  moduleOf?(methodName: string): string;
}

/**
 * One `ReverseTunnel/Connect` stream: sends the descriptor, waits for KAS to send a request, runs
 * it against the local services and streams the result back, then ends. Tunnels are single-use,
 * as in GitLab's agentk.
 */
export class AgentTunnel {
  private stream: TunnelStream | undefined;
  private idleAborted = false;
  private cancelReason: ConnectError | undefined;
  private active = false;

  constructor(
    private readonly open: TunnelStreamOpener,
    private readonly host: LocalServiceHost,
    /** The descriptor message (sent first on every tunnel; built once by the pool). */
    private readonly descriptor: ConnectRequest,
    private readonly hooks: AgentTunnelHooks,
  ) {}

  /** The first message of every tunnel: the agent's descriptor. */
  static descriptorMessage(descriptor: AgentDescriptor): ConnectRequest {
    return create(ConnectRequestSchema, { msg: { case: "descriptor", value: { agentDescriptor: descriptor } } });
  }

  get isActive(): boolean {
    return this.active;
  }

  /** Closes the tunnel if it is idle; returns whether it was. */
  abortIfIdle(): boolean {
    if (this.active) return false;
    this.idleAborted = true;
    this.stream?.cancel(idleClosed());
    return true;
  }

  /** Cancels the request being served (shutdown grace expired). */
  cancelActive(): void {
    this.cancelReason ??= new ConnectError("agent is shutting down", Code.Unavailable);
    if (this.active) this.stream?.cancel(this.cancelReason);
    else this.abortIfIdle();
  }

  async run(): Promise<TunnelOutcome> {
    const stream = this.open();
    this.stream = stream;
    if (this.idleAborted) stream.cancel(idleClosed());
    // A failed send also fails the stream, which next() reports.
    stream.send(this.descriptor).catch(ignore);
    this.hooks.onIdle();
    let first: IteratorResult<ConnectResponse, undefined>;
    try {
      first = await stream.next();
    } catch (error) {
      stream.closeSend();
      if (this.idleAborted) return "aborted";
      throw error;
    }
    if (first.done) {
      stream.closeSend();
      return "closed";
    }
    if (first.value.msg.case !== "requestInfo") {
      const error = new ConnectError(`tunnel protocol violation: expected request_info, got ${first.value.msg.case}`, Code.Internal);
      stream.cancel(error);
      throw error;
    }
    this.active = true;
    if (this.cancelReason) stream.cancel(this.cancelReason);
    const { methodName, meta } = first.value.msg.value;
    this.hooks.onActive(methodName);
    await this.serve(methodName, meta, stream);
    return "served";
  }

  /**
   * The served call's span, a child of KAS's (RequestInfo's `traceparent`); the local handler
   * gets this span's context in its request headers instead.
   */
  private startSpan(methodName: string, meta: MetaMap): Span | undefined {
    const tracing = this.hooks.tracing;
    if (!tracing) return undefined;
    const rpc = rpcSpan(methodName);
    const span = tracing.startSpan(rpc.name, SpanKind.SERVER, tracing.fromMeta(meta));
    if (span.isRecording()) {
      span.setAttributes({ ...rpc.attributes, [ATTR_AGENT_MODULE]: this.hooks.moduleOf?.(methodName) ?? "unknown" });
      tracing.injectMeta(span, meta);
    }
    return span;
  }

  private async serve(methodName: string, meta: MetaMap, stream: TunnelStream): Promise<void> {
    const incoming = new AsyncQueue<Uint8Array>(8);
    const localAbort = new AbortController();
    // Reads what KAS sends after request_info: messages, then close_send, then the end of stream.
    const reader = (async () => {
      let closedSend = false;
      try {
        for (;;) {
          const next = await stream.next();
          if (next.done) break;
          const msg = next.value.msg;
          if (closedSend || (msg.case !== "message" && msg.case !== "closeSend")) {
            throw new ConnectError(`tunnel protocol violation: unexpected ${msg.case}`, Code.Internal);
          }
          if (msg.case === "message") {
            // Once the local call has finished, whatever KAS still sends is discarded.
            if (!incoming.isClosed) await incoming.push(msg.value.data).catch(ignore);
          } else {
            closedSend = true;
            incoming.close();
          }
        }
        if (!closedSend) {
          throw new ConnectError("KAS ended the tunnel before close_send", Code.Canceled);
        }
      } catch (error) {
        // KAS cancelled the call (client went away) or the connection broke: stop the local call.
        const ce = ConnectError.from(error);
        incoming.close(ce);
        localAbort.abort(ce);
        stream.cancel(ce);
      }
    })();

    const span = this.startSpan(methodName, meta);
    let headerSent = false;
    let trailerSent = false;
    let code: Code | 0 = 0;
    let failure: string | undefined;
    try {
      for await (const event of this.host.invoke(methodName, meta, incoming, localAbort.signal)) {
        if (event.kind === "header") {
          await stream.send(create(ConnectRequestSchema, { msg: { case: "header", value: { meta: event.meta } } }));
          headerSent = true;
        } else if (event.kind === "message") {
          await stream.send(create(ConnectRequestSchema, { msg: { case: "message", value: { data: event.data } } }));
        } else {
          await stream.send(create(ConnectRequestSchema, { msg: { case: "trailer", value: { meta: event.meta } } }));
          trailerSent = true;
          if (event.error) {
            code = event.error.code;
            failure = event.error.rawMessage;
            await stream.send(create(ConnectRequestSchema, { msg: { case: "error", value: { status: statusFromError(event.error) } } }));
          }
        }
      }
    } catch (error) {
      const ce = ConnectError.from(error);
      code = ce.code;
      failure = ce.rawMessage;
      if (!stream.isSendClosed) {
        if (headerSent && !trailerSent) {
          await stream.send(create(ConnectRequestSchema, { msg: { case: "trailer", value: { meta: {} } } })).catch(ignore);
        }
        await stream.send(create(ConnectRequestSchema, { msg: { case: "error", value: { status: statusFromError(error) } } })).catch(ignore);
      }
    } finally {
      stream.closeSend();
      incoming.close();
      // As connect does for its handlers: the call's signal aborts once the call is over, so
      // whatever a handler tied to it (timers, watches) stops.
      localAbort.abort(callFinished);
      this.hooks.onCallEnd?.(methodName, code);
      if (span) endSpan(span, code, failure);
    }
    // KAS ends the stream once it has the trailer; shutdown cuts a hung one via cancelActive().
    await reader;
  }
}

/** Ends a served call's span with its gRPC status. */
function endSpan(span: Span, code: Code | 0, failure: string | undefined): void {
  if (span.isRecording()) {
    span.setAttribute(ATTR_GRPC_STATUS, code);
    if (code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: failure });
  }
  span.end();
}

/** The reason a local call's signal is aborted with once the call has finished (shared, no stack per call). */
const callFinished = new ConnectError("the call has finished", Code.Canceled);

function idleClosed(): ConnectError {
  return new ConnectError("idle tunnel closed", Code.Canceled);
}

function ignore(): void {}
