import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import {
  ConnectRequestSchema,
  type ConnectRequest,
  type ConnectResponse,
  type ReverseTunnel,
} from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { AgentDescriptor } from "../../gen/gitlab/agent/reverse_tunnel/info/info_pb.js";
import { AsyncQueue } from "../../util/async-queue.js";
import { statusFromError } from "../rpc-status.js";
import type { MetaMap } from "../../util/metadata.js";
import type { LocalServiceHost } from "./local-service-host.js";

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
}

/**
 * One `ReverseTunnel/Connect` stream: sends the descriptor, waits for KAS to send a request, runs
 * it against the local services and streams the result back, then ends. Tunnels are single-use,
 * as in GitLab's agentk.
 */
export class AgentTunnel {
  /** The stream's controller; one per tunnel (idle close and shutdown cancel both abort it). */
  private streamAbort: AbortController | undefined;
  private idleAborted = false;
  private cancelReason: ConnectError | undefined;
  private active = false;

  constructor(
    private readonly client: Client<typeof ReverseTunnel>,
    private readonly host: LocalServiceHost,
    private readonly descriptor: AgentDescriptor,
    private readonly hooks: AgentTunnelHooks,
  ) {}

  get isActive(): boolean {
    return this.active;
  }

  /** Closes the tunnel if it is idle; returns whether it was. */
  abortIfIdle(): boolean {
    if (this.active) return false;
    this.idleAborted = true;
    this.streamAbort?.abort();
    return true;
  }

  /** Cancels the request being served (shutdown grace expired). */
  cancelActive(): void {
    this.cancelReason ??= new ConnectError("agent is shutting down", Code.Unavailable);
    if (this.active) this.streamAbort?.abort(this.cancelReason);
    else this.abortIfIdle();
  }

  async run(): Promise<TunnelOutcome> {
    const out = new AsyncQueue<ConnectRequest>(8);
    await out.push(create(ConnectRequestSchema, { msg: { case: "descriptor", value: { agentDescriptor: this.descriptor } } }));
    const streamAbort = new AbortController();
    this.streamAbort = streamAbort;
    if (this.idleAborted) streamAbort.abort();
    const responses = this.client.connect(out, { signal: streamAbort.signal })[Symbol.asyncIterator]();
    this.hooks.onIdle();
    let first: IteratorResult<ConnectResponse>;
    try {
      first = await responses.next();
    } catch (error) {
      out.close();
      if (this.idleAborted) return "aborted";
      throw error;
    }
    if (first.done) {
      out.close();
      return "closed";
    }
    if (first.value.msg.case !== "requestInfo") {
      streamAbort.abort();
      throw new ConnectError(`tunnel protocol violation: expected request_info, got ${first.value.msg.case}`, Code.Internal);
    }
    this.active = true;
    if (this.cancelReason) streamAbort.abort(this.cancelReason);
    const { methodName, meta } = first.value.msg.value;
    this.hooks.onActive(methodName);
    await this.serve(methodName, meta, responses, out);
    return "served";
  }

  private async serve(
    methodName: string,
    meta: MetaMap,
    responses: AsyncIterator<ConnectResponse>,
    out: AsyncQueue<ConnectRequest>,
  ): Promise<void> {
    const incoming = new AsyncQueue<Uint8Array>(8);
    const localAbort = new AbortController();
    // Reads what KAS sends after request_info: messages, then close_send, then the end of stream.
    const reader = (async () => {
      let closedSend = false;
      try {
        for (;;) {
          const next = await responses.next();
          if (next.done) break;
          const msg = next.value.msg;
          if (closedSend || (msg.case !== "message" && msg.case !== "closeSend")) {
            throw new ConnectError(`tunnel protocol violation: unexpected ${msg.case}`, Code.Internal);
          }
          if (msg.case === "message") {
            // Once the local call has finished, whatever KAS still sends is discarded.
            if (!incoming.isClosed) await incoming.push(msg.value.data).catch(() => {});
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
        incoming.close(error);
        localAbort.abort(error);
        out.close();
      }
    })();

    let headerSent = false;
    let trailerSent = false;
    try {
      for await (const event of this.host.invoke(methodName, meta, incoming, localAbort.signal)) {
        if (event.kind === "header") {
          await out.push(create(ConnectRequestSchema, { msg: { case: "header", value: { meta: event.meta } } }));
          headerSent = true;
        } else if (event.kind === "message") {
          await out.push(create(ConnectRequestSchema, { msg: { case: "message", value: { data: event.data } } }));
        } else {
          await out.push(create(ConnectRequestSchema, { msg: { case: "trailer", value: { meta: event.meta } } }));
          trailerSent = true;
          if (event.error) {
            await out.push(create(ConnectRequestSchema, { msg: { case: "error", value: { status: statusFromError(event.error) } } }));
          }
        }
      }
    } catch (error) {
      if (!out.isClosed) {
        if (headerSent && !trailerSent) {
          await out.push(create(ConnectRequestSchema, { msg: { case: "trailer", value: { meta: {} } } })).catch(() => {});
        }
        await out.push(create(ConnectRequestSchema, { msg: { case: "error", value: { status: statusFromError(error) } } })).catch(() => {});
      }
    } finally {
      out.close();
      incoming.close();
    }
    // KAS ends the stream once it has the trailer; shutdown cuts a hung one via streamAbort.
    await reader;
  }
}
