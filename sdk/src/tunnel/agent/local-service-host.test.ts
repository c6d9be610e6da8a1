import { describe, it } from "mocha";
import { expect } from "chai";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import {
  BidiRequestSchema,
  EchoRequestSchema,
  EchoService,
  FailRequestSchema,
  ServerStreamRequestSchema,
  ServerStreamResponseSchema,
} from "../../gen/kasbridge/echo/v1/echo_pb.js";
import { echoService } from "../../modules/echo/agent/echo-service.js";
import { ValuesSchema } from "../../gen/gitlab/agent/prototool/prototool_pb.js";
import { ConnectResponseSchema, type ConnectRequest, type ConnectResponse } from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import { AsyncQueue } from "../../util/async-queue.js";
import { AgentTunnel } from "./agent-tunnel.js";
import type { TunnelStream } from "./tunnel-stream.js";
import { LocalServiceHost, type LocalCallEvent } from "./local-service-host.js";

async function* from(messages: Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* messages;
}

/** The events of one call, with errors reduced to code, message and metadata. */
async function run(host: LocalServiceHost, method: string, messages: Uint8Array[], header: Record<string, string> = {}) {
  return runWith(host, method, from(messages), new AbortController().signal, header);
}

/** Like run(), with the caller's input and signal; `onEvent` runs before the next event is pulled. */
async function runWith(
  host: LocalServiceHost,
  method: string,
  input: AsyncIterable<Uint8Array>,
  signal: AbortSignal,
  header: Record<string, string> = {},
  onEvent?: (event: LocalCallEvent) => Promise<void> | void,
) {
  const meta = Object.fromEntries(Object.entries(header).map(([k, v]) => [k, create(ValuesSchema, { value: [v] })]));
  const events: unknown[] = [];
  for await (const event of host.invoke(`/${EchoService.typeName}/${method}`, meta, input, signal)) {
    events.push(simplify(event));
    await onEvent?.(event);
  }
  return events;
}

/** What the scripted streaming handlers do for a request whose payload starts with the byte. */
const op = { echo: 1, fail: 2, crash: 3, huge: 4, stop: 5 } as const;

/**
 * One scripted step: sets the call's trailer, throws for fail and crash, and returns the op.
 * `seen` counts the requests so far.
 */
function step(ctx: HandlerContext, seen: number, payload: Uint8Array, failure: ConnectError): number {
  ctx.responseTrailer.set("x-seen", String(seen));
  if (payload[0] === op.fail) throw failure;
  if (payload[0] === op.crash) throw new Error("boom");
  return payload[0];
}

/** Echo with Bidi and ClientStream driven by the requests' first byte, setting headers and trailers. */
function scripted(): Partial<ServiceImpl<typeof EchoService>> {
  return {
    ...echoService("host"),
    async *bidi(requests, ctx) {
      ctx.responseHeader.set("x-bidi", ctx.requestHeader.get("x-in") ?? "none");
      let n = 0;
      for await (const req of requests) {
        const what = step(ctx, ++n, req.payload, new ConnectError("bidi failed ü", Code.NotFound, { "x-err": "meta" }));
        if (what === op.stop) return;
        yield { payload: what === op.huge ? new Uint8Array(64) : req.payload };
      }
    },
    async clientStream(requests, ctx) {
      ctx.responseHeader.set("x-client", ctx.requestHeader.get("x-in") ?? "none");
      let messages = 0;
      for await (const req of requests) {
        if (step(ctx, ++messages, req.payload, new ConnectError("client failed", Code.FailedPrecondition, { "x-err": "meta" })) === op.stop) break;
      }
      return { messages, totalBytes: BigInt(messages) };
    },
  };
}

const request = (...payload: number[]) => toBinary(BidiRequestSchema, create(BidiRequestSchema, { payload: new Uint8Array(payload) }));

function simplify(event: LocalCallEvent): unknown {
  if (event.kind === "message") return { kind: "message", data: Buffer.from(event.data).toString("hex") };
  const meta = Object.fromEntries(Object.entries(event.meta).map(([k, v]) => [k, v.value]));
  if (event.kind === "header") return { kind: "header", meta };
  const error = event.error && { code: event.error.code, message: event.error.rawMessage, details: event.error.details.length };
  return { kind: "trailer", meta, error };
}

describe("LocalServiceHost", () => {
  const seen: string[] = [];
  const interceptor: Interceptor = (next) => (req) => {
    seen.push(req.method.name);
    return next(req);
  };
  const direct = new LocalServiceHost().register(EchoService, echoService("host"));
  const routed = new LocalServiceHost({ interceptors: [interceptor] }).register(EchoService, echoService("host"));
  const echo = toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload: new Uint8Array([1, 2, 3]) }));
  const stream = toBinary(ServerStreamRequestSchema, create(ServerStreamRequestSchema, { count: 3, size: 2, echoHeader: "x-h" }));
  const fail = toBinary(FailRequestSchema, create(FailRequestSchema, { code: Code.NotFound, message: "nope ü" }));

  it("runs unary and server-streaming calls without the router exactly as through it (interceptors force the router)", async () => {
    const calls: Array<[string, Uint8Array[], Record<string, string>?]> = [
      ["Echo", [echo]],
      ["ServerStream", [stream], { "x-h": "v" }],
      ["Fail", [fail]],
      ["Echo", []],
      ["Echo", [echo, echo]],
      ["ServerStream", []],
    ];
    for (const [method, messages, header] of calls) {
      const viaRouter = await run(routed, method, messages, header);
      expect(await run(direct, method, messages, header), `${method} x${messages.length}`).to.deep.equal(viaRouter);
    }
    // The router runs interceptors after checking a unary request, a server stream's before.
    expect(seen).to.deep.equal(["Echo", "ServerStream", "Fail", "ServerStream"]);
    const events = await run(direct, "ServerStream", [stream], { "x-h": "v" });
    expect(events[0]).to.deep.equal({ kind: "header", meta: { "echo-x-h": ["v"] } });
    const last = (events.at(-2) as { data: string }).data;
    expect(fromBinary(ServerStreamResponseSchema, Buffer.from(last, "hex")).index).to.equal(2);
    expect(events.at(-1)).to.deep.equal({ kind: "trailer", meta: { "echo-count": ["3"] }, error: undefined });
  });

  it("answers RESOURCE_EXHAUSTED for a request above the limit, on both paths", async () => {
    for (const host of [new LocalServiceHost({ maxMessageBytes: 10 }), new LocalServiceHost({ maxMessageBytes: 10, interceptors: [interceptor] })]) {
      host.register(EchoService, echoService("host"));
      const big = toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload: new Uint8Array(100) }));
      const events = await run(host, "Echo", [big]).catch((e: unknown) => [{ thrown: ConnectError.from(e).code }]);
      const code = (events.at(-1) as { error?: { code: Code }; thrown?: Code }).error?.code ?? (events.at(-1) as { thrown?: Code }).thrown;
      expect(code).to.equal(Code.ResourceExhausted);
    }
  });

  describe("client streaming and bidi", () => {
    const limit = 32;
    const directStreams = new LocalServiceHost({ maxMessageBytes: limit }).register(EchoService, scripted());
    const routedStreams = new LocalServiceHost({ maxMessageBytes: limit, interceptors: [interceptor] }).register(EchoService, scripted());
    const big = toBinary(BidiRequestSchema, create(BidiRequestSchema, { payload: new Uint8Array(limit) }));
    const malformed = new Uint8Array([0xff, 0xff]);

    /** Both paths, the same events. */
    async function same(method: string, messages: Uint8Array[], header?: Record<string, string>) {
      const viaRouter = await run(routedStreams, method, messages, header);
      const direct = await run(directStreams, method, messages, header);
      expect(direct, `${method} ${messages.map((m) => Buffer.from(m).toString("hex")).join(",")}`).to.deep.equal(viaRouter);
      return direct;
    }

    it("succeed with the same messages, headers and trailers, also when the input ends early or is empty", async () => {
      const echoed = await same("Bidi", [request(op.echo, 1), request(op.echo, 2), request(op.echo, 3)], { "x-in": "v" });
      expect(echoed).to.have.length(5);
      expect(echoed[0]).to.deep.equal({ kind: "header", meta: { "x-bidi": ["v"] } });
      expect(echoed.at(-1)).to.deep.equal({ kind: "trailer", meta: { "x-seen": ["3"] }, error: undefined });
      await same("Bidi", []);
      // The handler stops reading (returns) before the input has ended.
      await same("Bidi", [request(op.echo, 1), request(op.stop), request(op.echo, 2)]);
      const counted = await same("ClientStream", [request(op.echo), request(op.echo)], { "x-in": "c" });
      expect(counted[0]).to.deep.equal({ kind: "header", meta: { "x-client": ["c"] } });
      expect(counted).to.have.length(3);
      await same("ClientStream", []);
      await same("ClientStream", [request(op.stop), request(op.echo)]);
      // Echo's plain implementations.
      const plain = new LocalServiceHost().register(EchoService, echoService("host"));
      expect(await run(plain, "Bidi", [request(7), request(8)])).to.deep.equal(await run(routed, "Bidi", [request(7), request(8)]));
      expect(await run(plain, "ClientStream", [request(7), request(8)])).to.deep.equal(await run(routed, "ClientStream", [request(7), request(8)]));
    });

    it("report handler errors before and after output, and non-ConnectErrors as INTERNAL, with the same status and metadata", async () => {
      const before = await same("Bidi", [request(op.fail)]);
      expect(before).to.have.length(2);
      expect(before.at(-1)).to.deep.include({ meta: { "x-seen": ["1"], "x-err": ["meta"] } });
      const after = await same("Bidi", [request(op.echo), request(op.echo), request(op.fail)]);
      expect(after).to.have.length(4);
      expect((after.at(-1) as { error: unknown }).error).to.deep.equal({ code: Code.NotFound, message: "bidi failed ü", details: 0 });
      const crashed = await same("Bidi", [request(op.echo), request(op.crash)]);
      expect((crashed.at(-1) as { error: unknown }).error).to.deep.equal({ code: Code.Internal, message: "internal error", details: 0 });
      await same("ClientStream", [request(op.echo), request(op.fail)]);
      await same("ClientStream", [request(op.crash)]);
      // A unary handler that throws something else than a ConnectError.
      const crashing: Partial<ServiceImpl<typeof EchoService>> = { ...echoService("host"), echo: () => Promise.reject(new Error("boom")) };
      const directEcho = new LocalServiceHost().register(EchoService, crashing);
      const routedEcho = new LocalServiceHost({ interceptors: [interceptor] }).register(EchoService, crashing);
      expect(await run(directEcho, "Echo", [echo])).to.deep.equal(await run(routedEcho, "Echo", [echo]));
    });

    it("answer RESOURCE_EXHAUSTED for an oversize message either way, and the router's error for a malformed one", async () => {
      const input = await same("Bidi", [request(op.echo), big, request(op.echo)]);
      expect(input).to.have.length(3);
      expect((input.at(-1) as { error: { code: Code } }).error.code).to.equal(Code.ResourceExhausted);
      const output = await same("Bidi", [request(op.echo), request(op.huge)]);
      expect((output.at(-1) as { error: { code: Code } }).error.code).to.equal(Code.ResourceExhausted);
      await same("ClientStream", [request(op.echo), big]);
      const bad = await same("Bidi", [request(op.echo), malformed]);
      expect((bad.at(-1) as { error: { message: string } }).error.message).to.match(/^parse binary: /);
      await same("ClientStream", [malformed]);
      // The single request of unary and server-streaming calls goes through the same checks, in the router's order.
      await same("Echo", [malformed]);
      await same("Echo", [echo, big]);
      await same("ServerStream", [big, stream]);
    });

    it("stop with the cancellation's status when the call is cancelled mid-stream, and abort the handler's signal with it", async () => {
      const cancelled = new ConnectError("caller went away", Code.Canceled);
      const signals: AbortSignal[] = [];
      const watching: Partial<ServiceImpl<typeof EchoService>> = {
        ...scripted(),
        async *bidi(requests, ctx) {
          signals.push(ctx.signal);
          for await (const req of requests) yield { payload: req.payload };
        },
      };
      const hosts = [
        new LocalServiceHost().register(EchoService, watching),
        new LocalServiceHost({ interceptors: [interceptor] }).register(EchoService, watching),
      ];
      const results: unknown[][] = [];
      for (const host of hosts) {
        // As AgentTunnel does: each answer brings the next request; after two, KAS cancels.
        const incoming = new AsyncQueue<Uint8Array>(8);
        const abort = new AbortController();
        let answered = 0;
        await incoming.push(request(op.echo, 0));
        results.push(
          await runWith(host, "Bidi", incoming, abort.signal, {}, async (event) => {
            if (event.kind !== "message") return;
            if (++answered < 2) return incoming.push(request(op.echo, answered));
            incoming.close(cancelled);
            abort.abort(cancelled);
          }),
        );
      }
      expect(results[0]).to.deep.equal(results[1]);
      expect(results[0]).to.have.length(4);
      expect(results[0].at(-1)).to.deep.equal({ kind: "trailer", meta: {}, error: { code: Code.Canceled, message: "caller went away", details: 0 } });
      expect(signals.map((s) => s.reason)).to.deep.equal([cancelled, cancelled]);
      // A client stream cancelled before it answers.
      const clientResults: unknown[][] = [];
      for (const host of [directStreams, routedStreams]) {
        const incoming = new AsyncQueue<Uint8Array>(8);
        const abort = new AbortController();
        await incoming.push(request(op.echo));
        const call = runWith(host, "ClientStream", incoming, abort.signal);
        await incoming.push(request(op.echo));
        incoming.close(cancelled);
        abort.abort(cancelled);
        clientResults.push(await call);
      }
      expect(clientResults[0]).to.deep.equal(clientResults[1]);
      expect((clientResults[0].at(-1) as { error: { code: Code } }).error.code).to.equal(Code.Canceled);
    });

    it("run on the direct path: the handler gets the call's own signal (the router links one of its own)", async () => {
      const signals: AbortSignal[] = [];
      const recording: Partial<ServiceImpl<typeof EchoService>> = {
        async *bidi(requests, ctx) {
          signals.push(ctx.signal);
          for await (const req of requests) yield { payload: req.payload };
        },
        async clientStream(_requests, ctx) {
          signals.push(ctx.signal);
          return {};
        },
      };
      const signal = new AbortController().signal;
      for (const host of [new LocalServiceHost(), new LocalServiceHost({ interceptors: [interceptor] })]) {
        host.register(EchoService, recording);
        await runWith(host, "Bidi", from([]), signal);
        await runWith(host, "ClientStream", from([]), signal);
      }
      expect(signals.map((s) => s === signal)).to.deep.equal([true, true, false, false]);
    });

    it("serve bidi through AgentTunnel with backpressure and abort the handler's signal at call end with one shared reason", async () => {
      const reasons: unknown[] = [];
      let release: () => void = () => {};
      const gate = new Promise<void>((resolve) => (release = resolve));
      let received = 0;
      const gated: Partial<ServiceImpl<typeof EchoService>> = {
        ...echoService("host"),
        async *bidi(requests, ctx) {
          ctx.signal.addEventListener("abort", () => reasons.push(ctx.signal.reason));
          for await (const req of requests) {
            received++;
            await gate;
            yield { payload: req.payload };
          }
        },
      };
      const host = new LocalServiceHost().register(EchoService, gated);
      const path = `/${EchoService.typeName}/Bidi`;
      for (let call = 0; call < 2; call++) {
        const stream = new FakeTunnelStream([
          { msg: { case: "requestInfo", value: { methodName: path, meta: {} } } },
          ...Array.from({ length: 50 }, (_, i) => ({ msg: { case: "message" as const, value: { data: request(op.echo, i) } } })),
          { msg: { case: "closeSend", value: {} } },
        ]);
        const tunnel = new AgentTunnel(() => stream, host, AgentTunnel.descriptorMessage(host.descriptor()), { onIdle() {}, onActive() {} });
        const served = tunnel.run();
        if (call === 0) {
          // While the handler holds its first request, KAS's messages stop being read once the
          // tunnel's incoming queue (8) is full.
          while (received === 0) await new Promise((resolve) => setImmediate(resolve));
          for (let turn = 0; turn < 100; turn++) await new Promise((resolve) => setImmediate(resolve));
          expect(stream.delivered).to.be.at.most(1 + 1 + 8 + 1);
          release();
        }
        expect(await served).to.equal("served");
        const sent = stream.sent.map((m) => m.msg.case);
        expect(sent).to.deep.equal(["descriptor", "header", ...Array(50).fill("message"), "trailer"]);
        const echoed = stream.sent.filter((m) => m.msg.case === "message").map((m) => (m.msg.value as { data: Uint8Array }).data);
        expect(echoed.map((d) => Buffer.from(d).toString("hex"))).to.deep.equal(Array.from({ length: 50 }, (_, i) => Buffer.from(request(op.echo, i)).toString("hex")));
      }
      expect(reasons).to.have.length(2);
      expect(reasons[0]).to.be.instanceOf(ConnectError);
      expect(reasons[1]).to.equal(reasons[0]);
    });
  });
});

/** KAS's side of one tunnel, scripted: what it sends, and what the agent sent. */
class FakeTunnelStream implements TunnelStream {
  readonly sent: ConnectRequest[] = [];
  /** Messages handed to the agent so far. */
  delivered = 0;
  private readonly incoming: ConnectResponse[];
  private sendClosed = false;
  private failure: ConnectError | undefined;

  constructor(script: Array<Parameters<typeof create<typeof ConnectResponseSchema>>[1]>) {
    this.incoming = script.map((init) => create(ConnectResponseSchema, init));
  }

  get isSendClosed(): boolean {
    return this.sendClosed;
  }

  async next(): Promise<IteratorResult<ConnectResponse, undefined>> {
    // One turn of the event loop per message, as from a socket.
    await new Promise((resolve) => setImmediate(resolve));
    if (this.failure) throw this.failure;
    const value = this.incoming.shift();
    if (value) this.delivered++;
    return value ? { done: false, value } : { done: true, value: undefined };
  }

  async send(message: ConnectRequest): Promise<void> {
    if (this.sendClosed) throw new ConnectError("send closed", Code.Internal);
    this.sent.push(message);
  }

  closeSend(): void {
    this.sendClosed = true;
  }

  cancel(reason: ConnectError): void {
    this.failure ??= reason;
    this.sendClosed = true;
  }
}
