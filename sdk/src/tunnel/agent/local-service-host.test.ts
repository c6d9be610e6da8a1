import { describe, it } from "mocha";
import { expect } from "chai";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  EchoRequestSchema,
  EchoService,
  FailRequestSchema,
  ServerStreamRequestSchema,
  ServerStreamResponseSchema,
} from "../../gen/kasbridge/echo/v1/echo_pb.js";
import { echoService } from "../../modules/echo/echo-service.js";
import { ValuesSchema } from "../../gen/gitlab/agent/prototool/prototool_pb.js";
import { LocalServiceHost, type LocalCallEvent } from "./local-service-host.js";

async function* from(messages: Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* messages;
}

/** The events of one call, with errors reduced to code, message and metadata. */
async function run(host: LocalServiceHost, method: string, messages: Uint8Array[], header: Record<string, string> = {}) {
  const meta = Object.fromEntries(Object.entries(header).map(([k, v]) => [k, create(ValuesSchema, { value: [v] })]));
  const events: unknown[] = [];
  const signal = new AbortController().signal;
  for await (const event of host.invoke(`/${EchoService.typeName}/${method}`, meta, from(messages), signal)) {
    events.push(simplify(event));
  }
  return events;
}

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
});
