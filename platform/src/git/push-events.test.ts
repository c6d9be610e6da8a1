import { expect } from "chai";
import { describe, it } from "mocha";
import pino from "pino";
import { deferred } from "@kasbridge/testing/wait";
import { PushDispatcher, type PushEvent, type RefUpdate } from "./push-events.js";

const Z = "0".repeat(40);
const oid = (n: number) => String(n).repeat(40).slice(0, 40);

/** A dispatcher whose diff of `gated` commits waits until the test releases it. */
function dispatcher(reorderWaitMs = 2000, gated: Record<string, Promise<void>> = {}) {
  const events: PushEvent[] = [];
  const diffing: string[] = [];
  const d = new PushDispatcher({
    reorderWaitMs,
    logger: pino({ level: "silent" }),
    async changedPaths(_projectId, u: RefUpdate) {
      diffing.push(u.after);
      await gated[u.after];
      if (u.after === oid(9)) throw new Error("diff failed");
      return [`${u.ref}:${u.after.slice(0, 1)}`];
    },
    deliver: (e) => events.push(e),
  });
  return { d, events, diffing };
}

/** Lets every promise callback and I/O callback queued so far run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("PushDispatcher", () => {
  it("delivers one event per ref, one push at a time per project, in submission order", async () => {
    const slowDiff = deferred();
    const { d, events, diffing } = dispatcher(2000, { [oid(1)]: slowDiff.promise });
    const a = d.submit(1, [
      { ref: "refs/heads/a", before: Z, after: oid(1) },
      { ref: "refs/heads/b", before: Z, after: oid(2) },
    ]);
    const b = d.submit(1, [{ ref: "refs/heads/c", before: Z, after: oid(3) }]);
    await settle();
    // The first push's first ref is being diffed; nothing of the second push has started.
    expect(diffing).to.deep.equal([oid(1)]);
    expect(events).to.deep.equal([]);
    slowDiff.resolve();
    await Promise.all([a, b]);
    expect(events.map((e) => [e.projectId, e.ref, e.changedPaths[0]])).to.deep.equal([
      [1, "refs/heads/a", "refs/heads/a:1"],
      [1, "refs/heads/b", "refs/heads/b:2"],
      [1, "refs/heads/c", "refs/heads/c:3"],
    ]);
  });

  it("puts a push that arrived before its predecessor on the same ref back in order", async () => {
    const { d, events } = dispatcher();
    await d.submit(1, [{ ref: "refs/heads/main", before: Z, after: oid(1) }]);
    // 2 -> 3 reported before 1 -> 2: held until 1 -> 2 arrives.
    const late = d.submit(1, [{ ref: "refs/heads/main", before: oid(2), after: oid(3) }]);
    const other = d.submit(1, [{ ref: "refs/heads/other", before: Z, after: oid(5) }]);
    await other;
    expect(events.map((e) => e.after)).to.deep.equal([oid(1), oid(5)]);
    await d.submit(1, [{ ref: "refs/heads/main", before: oid(1), after: oid(2) }]);
    await late;
    expect(events.map((e) => e.after)).to.deep.equal([oid(1), oid(5), oid(2), oid(3)]);
  });

  it("gives up waiting for a missing predecessor after reorderWaitMs", async () => {
    const { d, events } = dispatcher(100);
    await d.submit(1, [{ ref: "refs/heads/main", before: Z, after: oid(1) }]);
    const orphan = d.submit(1, [{ ref: "refs/heads/main", before: oid(7), after: oid(8) }]);
    await settle();
    // Held: its predecessor (7) may still arrive.
    expect(events.map((e) => e.after)).to.deep.equal([oid(1)]);
    await orphan;
    expect(events.map((e) => e.after)).to.deep.equal([oid(1), oid(8)]);
  });

  it("delivers with no paths when they cannot be computed, and keeps projects independent", async () => {
    const slowDiff = deferred();
    const { d, events } = dispatcher(2000, { [oid(1)]: slowDiff.promise });
    const slow = d.submit(1, [{ ref: "refs/heads/a", before: Z, after: oid(1) }]);
    // Project 2 is delivered while project 1's diff has not finished.
    await d.submit(2, [{ ref: "refs/heads/a", before: Z, after: oid(9) }]);
    expect(events.map((e) => [e.projectId, e.changedPaths])).to.deep.equal([[2, []]]);
    slowDiff.resolve();
    await slow;
    expect(events).to.have.length(2);
    await d.submit(3, []);
  });
});
