import { describe, it } from "mocha";
import { expect } from "chai";
import { MessageInbox } from "./message-inbox.js";

describe("MessageInbox", () => {
  it("hands items to a waiting reader, pauses the source at the high-water mark and resumes it", async () => {
    const calls: string[] = [];
    const inbox = new MessageInbox<number>(2);
    inbox.source = { pause: () => calls.push("pause"), resume: () => calls.push("resume") };
    const first = inbox.next();
    inbox.deliver(1);
    expect(await first).to.deep.equal({ done: false, value: 1 });
    inbox.deliver(2);
    expect(calls).to.deep.equal([]);
    inbox.deliver(3);
    expect(calls).to.deep.equal(["pause"]);
    inbox.deliver(4); // already paused: the source may still flush what it had
    expect(await inbox.next()).to.deep.equal({ done: false, value: 2 });
    expect(calls).to.deep.equal(["pause"]);
    expect(await inbox.next()).to.deep.equal({ done: false, value: 3 });
    expect(calls).to.deep.equal(["pause", "resume"]);
    inbox.end();
    expect(inbox.isSettled).to.equal(true);
    expect(await inbox.next()).to.deep.equal({ done: false, value: 4 });
    expect(await inbox.next()).to.deep.equal({ done: true, value: undefined });
  });

  it("fails after the waiting items, or at once when they are discarded; a second reader is refused", async () => {
    const kept = new MessageInbox<number>();
    kept.deliver(1);
    kept.fail(new Error("broken"));
    kept.end(); // no effect once settled
    expect(await kept.next()).to.deep.equal({ done: false, value: 1 });
    expect(await kept.next().catch((e: Error) => e.message)).to.equal("broken");

    const discarded = new MessageInbox<number>();
    discarded.deliver(1);
    discarded.fail(new Error("cancelled"), true);
    expect(await discarded.next().catch((e: Error) => e.message)).to.equal("cancelled");

    const waiting = new MessageInbox<number>();
    const pending = waiting.next();
    expect(await waiting.next().catch((e: Error) => e.message)).to.match(/single reader/);
    waiting.fail(new Error("gone"));
    expect(await pending.catch((e: Error) => e.message)).to.equal("gone");
  });
});
