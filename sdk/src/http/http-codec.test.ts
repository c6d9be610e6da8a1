import { create } from "@bufbuild/protobuf";
import { expect } from "chai";
import { ValuesSchema, type Values } from "../gen/gitlab/agent/prototool/prototool_pb.js";
import { connectionOptions, isFinalStatusCode, mapToNodeHeaders, nodeHeadersToMap, rawResponseHead, safeReasonPhrase } from "./http-codec.js";

const map = (h: Record<string, string[]>): { [k: string]: Values } =>
  Object.fromEntries(Object.entries(h).map(([k, v]) => [k, create(ValuesSchema, { value: v })]));

describe("kubeproxy: HTTP over the tunnel", () => {
  it("reads the names a Connection header lists, over several lines", () => {
    expect([...connectionOptions("keep-alive, X-Foo ,,Upgrade")]).to.deep.equal(["keep-alive", "x-foo", "upgrade"]);
    expect([...connectionOptions(["close", "X-Bar"])]).to.deep.equal(["close", "x-bar"]);
    expect(connectionOptions(undefined).size).to.equal(0);
  });

  it("does not forward hop-by-hop request headers, those the client's Connection names included", () => {
    const out = nodeHeadersToMap({ connection: "keep-alive, X-Secret, accept", "x-secret": "s", accept: "application/yaml", "keep-alive": "5", te: "trailers", "x-ok": "1" });
    expect(Object.keys(out)).to.deep.equal(["X-Ok"]);
    const upgrade = nodeHeadersToMap({ connection: "Upgrade, X-Stream-Protocol-Version", upgrade: "SPDY/3.1", "x-stream-protocol-version": "v4" }, { keepUpgrade: true });
    expect(Object.fromEntries(Object.entries(upgrade).map(([k, v]) => [k, v.value]))).to.deep.equal({ Upgrade: ["SPDY/3.1"], Connection: ["Upgrade"] });
  });

  it("drops hop-by-hop and invalid headers of an answer and reports the invalid ones", () => {
    const invalid: string[] = [];
    const out = mapToNodeHeaders(
      map({
        Connection: ["X-Hop, close"],
        "X-Hop": ["h"],
        "Keep-Alive": ["timeout=5"],
        "Transfer-Encoding": ["chunked"],
        "X-Crlf": ["a\r\nSet-Cookie: x=1"],
        "X-Nul": ["a\0b"],
        "X-Bad\r\nName": ["v"],
        "Bad Name": ["v"],
        "X-Ok": ["1", "2"],
      }),
      { onInvalid: (n) => invalid.push(n) },
    );
    expect(out).to.deep.equal({ "X-Ok": ["1", "2"] });
    expect(invalid).to.deep.equal(["X-Crlf", "X-Nul", "X-Bad\r\nName", "Bad Name"]);
    const upgraded = mapToNodeHeaders(map({ Connection: ["Upgrade"], Upgrade: ["SPDY/3.1"], "X-Ok": ["1"] }), { keepUpgrade: true });
    expect(upgraded).to.deep.equal({ Upgrade: "SPDY/3.1", "X-Ok": "1", Connection: "Upgrade" });
    expect(mapToNodeHeaders(map({ Connection: ["Upgrade"], Upgrade: ["h2c"] }), { keepUpgrade: true, forHttp2: true })).to.deep.equal({});
  });

  it("writes response heads without what could end a line", () => {
    expect(rawResponseHead(403, "Forbidden\r\nX: y", { "X-Ok": "1", "X-Bad": "a\r\nb", "Bad\r\nName": "c" })).to.equal("HTTP/1.1 403 ForbiddenX: y\r\nX-Ok: 1\r\n\r\n");
    expect(safeReasonPhrase("OK\u0000\u007f\ttab")).to.equal("OK\ttab");
    expect([200, 599, 101, 100, 600, 99, 200.5].map(isFinalStatusCode)).to.deep.equal([true, true, false, false, false, false, false]);
  });
});
