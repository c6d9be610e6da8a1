import { describe, it } from "mocha";
import { expect } from "chai";
import { hostPort } from "./host-port.js";

describe("util/hostPort", () => {
  it("brackets IPv6 addresses, once", () => {
    expect(hostPort("127.0.0.1", 8150)).to.equal("127.0.0.1:8150");
    expect(hostPort("kas.example.com", 443)).to.equal("kas.example.com:443");
    expect(hostPort("::1", 8150)).to.equal("[::1]:8150");
    expect(hostPort("fe80::1%eth0", 80)).to.equal("[fe80::1%eth0]:80");
    expect(hostPort("[::1]", 8150)).to.equal("[::1]:8150");
  });
});
