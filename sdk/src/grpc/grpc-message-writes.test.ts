import http2 from "node:http2";
import { expect } from "chai";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { tappedGrpcServer, type Http2Tap } from "./http2-frames.test-support.js";
import { waitFor } from "@kasbridge/testing/wait";
import { messagesInFlight, resetAfterMessages, writeGrpcFrame } from "./grpc-message-writes.js";

const { NGHTTP2_CANCEL } = http2.constants;

describe("util/grpc-message-writes (real HTTP/2)", function () {
  this.timeout(20_000);
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  /**
   * A server stream answering a client whose stream window is `windowBytes` and which reads
   * nothing until the test resumes it; the tap sees what the client receives.
   */
  async function open(windowBytes: number): Promise<{ server: http2.ServerHttp2Stream; client: http2.ClientHttp2Stream; tap: Http2Tap }> {
    const { streams, tap } = await tappedGrpcServer(cleanup);
    const session = cleanup.track(http2.connect(`http://127.0.0.1:${tap.port}`, { settings: { initialWindowSize: windowBytes } }));
    session.on("error", () => {});
    const client = session.request({ ":method": "POST", ":path": "/x.Y/Z", "content-type": "application/grpc" });
    client.on("error", () => {});
    await waitFor(() => streams.length === 1, undefined, "the server stream");
    return { server: streams[0]!, client, tap };
  }

  it("resets at once when every message written has gone out", async () => {
    const { server, client, tap } = await open(65_535);
    client.resume();
    for (const size of [1, 100, 40_000]) writeGrpcFrame(server, new Uint8Array(size));
    await waitFor(() => messagesInFlight(server) === 0, undefined, "the messages to go out");
    resetAfterMessages(server, NGHTTP2_CANCEL);
    expect(server.closed).to.equal(true);
    const received = tap.toClient.stream(client.id!);
    await waitFor(() => received.reset !== undefined, undefined, "the reset");
    expect(received.reset).to.deep.equal({ code: NGHTTP2_CANCEL, messages: 3, partial: false });
  });

  it("holds the reset until a message the peer's window holds back (and those queued behind it) has gone out", async () => {
    const { server, client, tap } = await open(1000);
    writeGrpcFrame(server, new Uint8Array(10));
    writeGrpcFrame(server, new Uint8Array(200_000).fill(1));
    writeGrpcFrame(server, new Uint8Array(20));
    const received = tap.toClient.stream(client.id!);
    await waitFor(() => received.messages.length === 1 && received.partial, undefined, "the window to stop the second message");
    resetAfterMessages(server, NGHTTP2_CANCEL);
    resetAfterMessages(server, NGHTTP2_CANCEL);
    expect(server.closed).to.equal(false);
    expect(messagesInFlight(server)).to.equal(2);
    client.resume();
    await waitFor(() => received.reset !== undefined, undefined, "the reset");
    expect(received.reset).to.deep.equal({ code: NGHTTP2_CANCEL, messages: 3, partial: false });
    expect(received.messages.map((m) => m.byteLength)).to.deep.equal([10, 200_000, 20]);
    expect(received.messages[1]!.every((b) => b === 1)).to.equal(true);
  });

  it("resets after maxWaitMs a peer that never takes the message", async () => {
    const { server, client, tap } = await open(1000);
    writeGrpcFrame(server, new Uint8Array(5000));
    const received = tap.toClient.stream(client.id!);
    await waitFor(() => received.partial, undefined, "the window to stop the message");
    resetAfterMessages(server, NGHTTP2_CANCEL, 50);
    await waitFor(() => received.reset !== undefined, undefined, "the reset");
    // Cut, as nothing else can end a stream whose peer takes no more data.
    expect(received.reset).to.deep.include({ code: NGHTTP2_CANCEL, partial: true });
    expect(server.closed).to.equal(true);
  });

  it("forgets a pending reset when the peer ends the stream first", async () => {
    const { server, client } = await open(1000);
    writeGrpcFrame(server, new Uint8Array(5000));
    await waitFor(() => messagesInFlight(server) === 1);
    resetAfterMessages(server, NGHTTP2_CANCEL);
    const closed = new Promise<void>((resolve) => server.once("close", () => resolve()));
    client.close(http2.constants.NGHTTP2_NO_ERROR);
    await closed;
    // The write failed with the stream; nothing is left in flight, and no timer keeps the process.
    await waitFor(() => messagesInFlight(server) === 0, undefined, "the write to fail");
    expect(server.rstCode).to.equal(http2.constants.NGHTTP2_NO_ERROR);
  });
});
