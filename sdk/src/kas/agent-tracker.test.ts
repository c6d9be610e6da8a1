import { expect } from "chai";
import { describe, it } from "mocha";
import type { AgentInfo } from "../platform-client/platform-client.js";
import { AgentTracker, type EndWatch } from "./agent-tracker.js";

const agent: AgentInfo = { agentId: 3, agentName: "a3", projectId: 1, projectPath: "g/p", defaultBranch: "main", tokenId: 30 };

/** An EndWatch the test ends by hand, counting live watches. */
function manualEnd() {
  const ends = new Set<() => void>();
  const watch: EndWatch = (end) => {
    ends.add(end);
    return () => ends.delete(end);
  };
  return { watch, live: () => ends.size, end: () => [...ends].forEach((end) => end()) };
}

describe("AgentTracker", () => {
  it("forgets a registration when its end watch fires, and stops watching", async () => {
    const tracker = new AgentTracker({ kasInstance: "kas-1" });
    const conn = manualEnd();
    let forgotten = 0;
    tracker.register(agent, 7n, undefined, conn.watch, () => forgotten++);
    expect(tracker.count()).to.equal(1);
    expect((await tracker.listConnections(3)).map((c) => c.connectionId)).to.deep.equal(["7"]);
    conn.end();
    expect(tracker.count()).to.equal(0);
    expect(forgotten).to.equal(1);
    expect(conn.live()).to.equal(0);
  });

  it("replaces a refreshed registration: the old watch stops, the first connection time stays", async () => {
    const tracker = new AgentTracker({ kasInstance: "kas-1" });
    const first = manualEnd();
    const second = manualEnd();
    tracker.register(agent, 7n, undefined, first.watch);
    const [before] = await tracker.listConnections(3);
    tracker.register(agent, 7n, undefined, second.watch);
    expect(first.live()).to.equal(0);
    expect(second.live()).to.equal(1);
    const [after] = await tracker.listConnections(3);
    expect(after.connectedAt.getTime()).to.equal(before.connectedAt.getTime());
    first.end();
    expect(tracker.count()).to.equal(1);
    second.end();
    expect(tracker.count()).to.equal(0);
  });

  it("drops at once a registration whose connection has already ended (signal or watch)", () => {
    const tracker = new AgentTracker({ kasInstance: "kas-1" });
    tracker.register(agent, 1n, undefined, AbortSignal.abort());
    tracker.register(agent, 2n, undefined, (end) => {
      end();
      return () => {};
    });
    expect(tracker.count()).to.equal(0);
    const closed = new AbortController();
    tracker.register(agent, 3n, undefined, closed.signal);
    expect(tracker.count()).to.equal(1);
    closed.abort();
    expect(tracker.count()).to.equal(0);
  });
});
