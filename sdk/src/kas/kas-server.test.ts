import { describe, it } from "mocha";
import { expect } from "chai";
import pino from "pino";
import { StaticPlatformClient } from "../platform-client/static-platform-client.test-support.js";
import { createKasServer } from "./kas-server.js";

describe("createKasServer", () => {
  it("logs its listeners' addresses as host:port, IPv6 in brackets", async () => {
    const lines: string[] = [];
    const kas = await createKasServer({
      platform: new StaticPlatformClient(),
      logger: pino({ level: "info" }, { write: (line: string) => lines.push(line) }),
      agentApi: { port: 0, host: "::1" },
      internalApi: { port: 0, host: "::1", jwtSecret: new Uint8Array(32) },
      privateApi: { port: 0, host: "127.0.0.1", jwtSecret: new Uint8Array(32) },
    });
    try {
      const listening = lines.map((l) => JSON.parse(l) as { msg: string; [key: string]: unknown }).find((l) => l.msg === "KAS listening");
      const addresses = {
        agent: `grpc://[::1]:${kas.agentApi.address.port}`,
        internal: `grpc://[::1]:${kas.internalApiAddress.port}`,
        private: `grpc://127.0.0.1:${kas.privateApiAddress!.port}`,
      };
      expect(listening).to.deep.include(addresses);
      expect(kas.addresses).to.deep.equal(addresses);
    } finally {
      await kas.close(0);
    }
  });
});
