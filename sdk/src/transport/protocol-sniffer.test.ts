import { expect } from "chai";
import * as net from "node:net";
import { HTTP2_PREFACE, classifyPrefix, sniffProtocol } from "./protocol-sniffer.js";

/** A connected client/server socket pair on loopback. */
async function socketPair(): Promise<{ client: net.Socket; server: net.Socket; close: () => Promise<void> }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const accepted = new Promise<net.Socket>((resolve) => listener.once("connection", resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, "127.0.0.1");
  const server = await accepted;
  return {
    client,
    server,
    close: async () => {
      client.destroy();
      server.destroy();
      await new Promise((resolve) => listener.close(resolve));
    },
  };
}

function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.resume();
  });
}

describe("transport/protocol-sniffer", () => {
  it("classifies prefixes of the HTTP/2 preface", () => {
    expect(classifyPrefix(Buffer.alloc(0))).to.equal(undefined);
    expect(classifyPrefix(HTTP2_PREFACE.subarray(0, 3))).to.equal(undefined);
    expect(classifyPrefix(HTTP2_PREFACE)).to.equal("h2");
    expect(classifyPrefix(Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 0, 4])]))).to.equal("h2");
    expect(classifyPrefix(Buffer.from("POST /x HTTP/1.1\r\n"))).to.equal("http1");
    expect(classifyPrefix(Buffer.from("PRX"))).to.equal("http1");
    expect(classifyPrefix(Buffer.from([0x16, 0x03, 0x01]))).to.equal("http1");
  });

  it("detects HTTP/2 from a preface split over many TCP chunks and keeps every byte", async () => {
    const { client, server, close } = await socketPair();
    try {
      const sniffed = sniffProtocol(server, 2000);
      const payload = Buffer.concat([HTTP2_PREFACE, Buffer.from("frames-after-preface")]);
      client.setNoDelay(true);
      for (let i = 0; i < payload.length; i += 5) {
        client.write(payload.subarray(i, i + 5));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(await sniffed).to.equal("h2");
      const all = readAll(server);
      client.end();
      expect((await all).equals(payload)).to.equal(true);
    } finally {
      await close();
    }
  });

  it("detects HTTP/1.1 from the first differing byte without waiting for more", async () => {
    const { client, server, close } = await socketPair();
    try {
      const sniffed = sniffProtocol(server, 2000);
      client.write("P");
      await new Promise((resolve) => setTimeout(resolve, 20));
      client.write("O");
      expect(await sniffed).to.equal("http1");
      const all = readAll(server);
      client.end("ST / HTTP/1.1\r\n\r\n");
      expect((await all).toString()).to.equal("POST / HTTP/1.1\r\n\r\n");
    } finally {
      await close();
    }
  });

  it("gives up on a silent connection after the timeout and destroys it", async () => {
    const { server, close } = await socketPair();
    try {
      // Nothing else can end the wait on a silent connection: the timeout did.
      expect(await sniffProtocol(server, 100)).to.equal(undefined);
      expect(server.destroyed).to.equal(true);
    } finally {
      await close();
    }
  });

  it("gives up when the peer closes mid-preface", async () => {
    const { client, server, close } = await socketPair();
    try {
      const sniffed = sniffProtocol(server, 2000);
      client.end(HTTP2_PREFACE.subarray(0, 10));
      expect(await sniffed).to.equal(undefined);
    } finally {
      await close();
    }
  });
});
