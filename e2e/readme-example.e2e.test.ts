import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect } from "chai";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

describe("e2e: README embed example", function () {
  this.timeout(60_000);

  it("runs as written and echoes through the tunnel", async () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const block = /<!-- embed-example:start -->\s*```ts\n([\s\S]*?)```\s*<!-- embed-example:end -->/.exec(readme);
    expect(block, "README has the embed example block").to.not.equal(null);
    // Inside the repository so that "@kasbridge/sdk" resolves like an installed package.
    const dir = mkdtempSync(join(root, "e2e", ".readme-example-"));
    try {
      const file = join(dir, "example.ts");
      writeFileSync(file, block![1]);
      const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", file], {
        cwd: root,
        timeout: 50_000,
      });
      expect(stdout).to.include("echo: hello");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
