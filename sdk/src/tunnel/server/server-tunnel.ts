import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRequest, ConnectResponse } from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { ConnectResponseSchema } from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { AgentDescriptor } from "../../gen/gitlab/agent/reverse_tunnel/info/info_pb.js";
import type { AgentInfo } from "../../platform-client/platform-client.js";
import { AsyncQueue } from "../../util/async-queue.js";
import type { MetaMap } from "../../util/metadata.js";
import { errorFromStatus } from "../rpc-status.js";

/** What the agent sends back for a call, in order: header, message*, then end (trailer + status). */
export type TunnelCallEvent =
  | { kind: "header"; meta: MetaMap }
  | { kind: "message"; data: Uint8Array }
  | { kind: "end"; trailer: MetaMap; error?: ConnectError };

/** A call running through one tunnel, as the caller (gateway, in-process client) sees it. */
export interface TunnelCall {
  /** The agent's response events; ends after the `end` event. */
  readonly events: AsyncIterable<TunnelCallEvent>;
  /** Sends one request message (serialized, unframed); waits while the tunnel is backed up. */
  send(data: Uint8Array): Promise<void>;
  /** Half-closes: the agent sees the end of the request stream. */
  closeSend(): Promise<void>;
  /** Cancels the call: the agent's handler is cancelled and the events end with an error. */
  cancel(reason?: ConnectError): void;
}

/**
 * Where a tunnel's responses to the agent go: by default an {@link AsyncQueue} that the Connect
 * handler yields from (`output()`); the raw HTTP/2 path writes them to the stream itself.
 */
export interface TunnelOutput {
  /** Sends one response; resolves when the next may be sent. Rejects once the output has ended. */
  push(message: ConnectResponse): Promise<void>;
  /** Ends the agent's stream: with `error` as the call's status, OK without. Idempotent. */
  close(error?: ConnectError): void;
}

let nextTunnelId = 1;

/**
 * Method sets by descriptor: every tunnel of an agent (and usually every agent of a version) sends
 * the same descriptor, so idle tunnels share one set instead of holding a copy each.
 */
const methodSets = new Map<string, ReadonlySet<string>>();
const methodSetCacheSize = 256;

function methodSet(descriptor: AgentDescriptor): ReadonlySet<string> {
  const names: string[] = [];
  for (const service of descriptor.services) {
    for (const method of service.methods) names.push(`/${service.name}/${method.name}`);
  }
  const key = names.join(" ");
  let set = methodSets.get(key);
  if (!set) {
    set = new Set(names);
    if (methodSets.size >= methodSetCacheSize) methodSets.delete(methodSets.keys().next().value as string);
    methodSets.set(key, set);
  }
  return set;
}

/**
 * The KAS side of one `ReverseTunnel/Connect` stream. Registered as idle after the descriptor; the
 * registry hands it to at most one call. `output()` is what the Connect handler yields to the
 * agent; `input` is what the agent sends after the descriptor.
 */
export class ServerTunnel {
  readonly id = nextTunnelId++;
  readonly methods: ReadonlySet<string>;
  private readonly connectedAtMs = Date.now();
  private readonly out: TunnelOutput;
  /** Created on first use of `closedSignal`: thousands of idle tunnels need no AbortController each. */
  private done: AbortController | undefined;
  private closed: { reason: unknown } | undefined;
  private taken = false;

  /**
   * @param streamSignal aborted when the agent's stream ends (disconnect, cancel) or the token is
   * revoked. Optional: the owner of the stream may call `streamEnded()` instead.
   * @param output where responses go; default a queue read through `output()`.
   */
  constructor(
    readonly agent: AgentInfo,
    descriptor: AgentDescriptor,
    private readonly input: AsyncIterator<ConnectRequest>,
    streamSignal?: AbortSignal,
    output?: TunnelOutput,
  ) {
    this.methods = methodSet(descriptor);
    this.out = output ?? new AsyncQueue<ConnectResponse>(8);
    if (streamSignal) {
      const onAbort = () => this.streamEnded(streamSignal.reason);
      if (streamSignal.aborted) onAbort();
      else {
        streamSignal.addEventListener("abort", onAbort, { once: true });
        this.closedSignal.addEventListener("abort", () => streamSignal.removeEventListener("abort", onAbort), { once: true });
      }
    }
  }

  /** When the agent opened the tunnel's stream. */
  get connectedAt(): Date {
    return new Date(this.connectedAtMs);
  }

  /** Aborted once the tunnel has ended for any reason. */
  get closedSignal(): AbortSignal {
    if (!this.done) {
      this.done = new AbortController();
      if (this.closed) this.done.abort(this.closed.reason);
    }
    return this.done.signal;
  }

  /** Whether the tunnel has ended for any reason. */
  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  get isTaken(): boolean {
    return this.taken;
  }

  /**
   * Set while the registry has handed the tunnel out but no call started on it yet (e.g. the
   * private API holds it for a routing replica's StartStreaming): it is no longer idle.
   */
  reserved = false;

  serves(methodName: string): boolean {
    return this.methods.has(methodName);
  }

  /**
   * Responses to yield to the agent; ends when the call completes or the tunnel closes. Only for a
   * tunnel built without its own `output`.
   */
  output(): AsyncIterable<ConnectResponse> {
    if (!(this.out instanceof AsyncQueue)) throw new Error("this tunnel writes its responses itself");
    return this.out as AsyncQueue<ConnectResponse>;
  }

  /**
   * Watches the agent side while idle: an idle agent must send nothing, so any message or the end
   * of its stream ends the tunnel. Returns the first message if the tunnel was taken meanwhile.
   */
  private firstRead: Promise<IteratorResult<ConnectRequest>> | undefined;
  watchIdle(): void {
    this.firstRead = this.input.next();
    this.firstRead.then(
      (result) => {
        if (this.taken) return;
        this.close(
          result.done
            ? undefined
            : new ConnectError(`tunnel protocol violation: ${result.value.msg.case} before request_info`, Code.InvalidArgument),
        );
      },
      (error) => {
        if (!this.taken) this.close(error);
      },
    );
  }

  /**
   * The agent's stream ended (disconnect, cancel), its token was revoked or KAS is shutting down:
   * ends the tunnel; a call in flight fails with UNAVAILABLE (or the revocation's UNAUTHENTICATED).
   */
  streamEnded(reason: unknown): void {
    this.close(abortError(reason, this.agent.agentId));
  }

  /** Ends the tunnel; an in-flight call fails with `error` (default: tunnel closed). */
  close(error?: unknown): void {
    if (this.closed) return;
    this.markClosed(error ?? new ConnectError(`tunnel of agent ${this.agent.agentId} closed`, Code.Unavailable));
    this.out.close(error === undefined ? undefined : ConnectError.from(error));
  }

  private markClosed(reason: unknown): void {
    this.closed = { reason };
    this.done?.abort(reason);
  }

  /** Starts a call on this (idle) tunnel. The registry guarantees it is called at most once. */
  start(methodName: string, meta: MetaMap): TunnelCall {
    if (this.taken) throw new Error("tunnel already taken");
    this.taken = true;
    const events = new AsyncQueue<TunnelCallEvent>(8);
    const agentId = this.agent.agentId;
    void this.out
      .push(create(ConnectResponseSchema, { msg: { case: "requestInfo", value: { methodName, meta } } }))
      .catch(() => {});
    const pump = async () => {
      // state: 0 expect header|error, 1 expect message|trailer, 2 expect error|EOF, 3 expect EOF
      let state = 0;
      let trailer: MetaMap = {};
      let error: ConnectError | undefined;
      try {
        for (;;) {
          const next = await (this.firstRead ?? this.input.next());
          this.firstRead = undefined;
          if (next.done) break;
          const msg = next.value.msg;
          if (msg.case === "header" && state === 0) {
            state = 1;
            await events.push({ kind: "header", meta: msg.value.meta });
          } else if (msg.case === "message" && state === 1) {
            await events.push({ kind: "message", data: msg.value.data });
          } else if (msg.case === "trailer" && state === 1) {
            state = 2;
            trailer = msg.value.meta;
          } else if (msg.case === "error" && (state === 0 || state === 2)) {
            state = 3;
            error = errorFromStatus(msg.value.status, metaHeaders(trailer));
          } else {
            throw new ConnectError(`tunnel protocol violation: unexpected ${msg.case ?? "empty message"}`, Code.Internal);
          }
        }
        if (state === 0 || state === 1) {
          throw new ConnectError(`agent ${agentId} ended the tunnel mid-call`, Code.Unavailable);
        }
        await events.push({ kind: "end", trailer, error });
        events.close();
        // Closed (no error) first: closing the output may end the stream, whose owner then closes
        // the tunnel, which would otherwise be marked closed with UNAVAILABLE.
        if (!this.closed) this.markClosed(undefined);
        this.out.close();
      } catch (e) {
        const reason = this.closed ? this.closed.reason : e;
        const ce = ConnectError.from(reason);
        // A caller's own cancel closed `events` already; whatever ended the tunnel is the agent's side.
        events.close(midCallError(ce, agentId));
        this.close(ce);
      }
    };
    void pump();
    return {
      events,
      send: (data) => this.out.push(create(ConnectResponseSchema, { msg: { case: "message", value: { data } } })),
      closeSend: () => this.out.push(create(ConnectResponseSchema, { msg: { case: "closeSend", value: {} } })),
      cancel: (reason) => {
        const error = reason ?? new ConnectError("call cancelled by the caller", Code.Canceled);
        events.close(error);
        this.close(error);
      },
    };
  }
}

function metaHeaders(meta: MetaMap): Headers {
  const headers = new Headers();
  for (const [k, v] of Object.entries(meta)) for (const value of v.value) headers.append(k, value);
  return headers;
}

/** Why the agent's stream ended: a revocation or shutdown says so; anything else means it went away. */
function abortError(reason: unknown, agentId: number): ConnectError {
  if (reason instanceof ConnectError && (reason.code === Code.Unauthenticated || reason.code === Code.Unavailable)) return reason;
  return new ConnectError(`agent ${agentId} disconnected`, Code.Unavailable);
}

/** A broken tunnel mid-call: keep resource-exhaustion visible, everything else is "agent went away". */
function midCallError(error: ConnectError, agentId: number): ConnectError {
  if (error.code === Code.ResourceExhausted || error.code === Code.Internal) return error;
  return new ConnectError(`agent ${agentId} went away mid-call: ${error.rawMessage}`, Code.Unavailable);
}
