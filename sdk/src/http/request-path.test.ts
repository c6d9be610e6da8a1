import { expect } from "chai";
import { ESCAPED_PATH_HEADER, RequestPathError, checkRawPath, encodePath, pathForApiServer, splitRequestTarget } from "./request-path.js";

describe("kubeproxy: request paths", () => {
  it("decodes a raw path and keeps its escaped form only when a segment holds a /", () => {
    expect(checkRawPath("/api/v1/namespaces/default/pods")).to.deep.equal({ decoded: "/api/v1/namespaces/default/pods" });
    expect(checkRawPath("/api/v1/namespaces/a%20b")).to.deep.equal({ decoded: "/api/v1/namespaces/a b" });
    expect(checkRawPath("/api/v1/namespaces/default/services/web:80/proxy/a%2Fb")).to.deep.equal({
      decoded: "/api/v1/namespaces/default/services/web:80/proxy/a/b",
      escaped: "/api/v1/namespaces/default/services/web:80/proxy/a%2Fb",
    });
  });

  it('refuses "." and ".." segments however they are written, and bad escapes', () => {
    for (const path of ["/api/../x", "/api/./x", "/api/%2e%2E/x", "/api/.%2E", "/api/x/..%2F..%2Fy", "/api/a%2F..", "/..", "/."]) {
      expect(() => checkRawPath(path), path).to.throw(RequestPathError, 'the request path must not have "." or ".." segments');
    }
    expect(() => checkRawPath("/api/%zz")).to.throw(RequestPathError, "invalid percent-encoding");
    expect(() => checkRawPath("api")).to.throw(RequestPathError, "must start with /");
    // Dots inside a name are fine.
    expect(checkRawPath("/api/v1/namespaces/a..b/.hidden").decoded).to.equal("/api/v1/namespaces/a..b/.hidden");
  });

  it("gives the agent the path to send: the escaped form KAS sent when it decodes to url_path, else url_path encoded", () => {
    expect(pathForApiServer("/api/v1/namespaces/a b", undefined)).to.equal("/api/v1/namespaces/a%20b");
    expect(pathForApiServer("/proxy/a/b", "/proxy/a%2Fb")).to.equal("/proxy/a%2Fb");
    expect(() => pathForApiServer("/proxy/a/b", "/proxy/a%2Fc")).to.throw(RequestPathError, `${ESCAPED_PATH_HEADER} does not match`);
    expect(() => pathForApiServer("/proxy/../b", undefined)).to.throw(RequestPathError);
    expect(() => pathForApiServer("/proxy/a/b", "/proxy/%2E%2E%2Fb")).to.throw(RequestPathError);
    expect(encodePath("/api/v1/namespaces/default/pods/web:8080")).to.equal("/api/v1/namespaces/default/pods/web:8080");
  });

  it("splits request targets in origin and absolute form, nothing else", () => {
    expect(splitRequestTarget("/a/b?x=1#f")).to.deep.equal({ rawPath: "/a/b", rawQuery: "x=1" });
    expect(splitRequestTarget("https://kas.example:8154/a/../b?x")).to.deep.equal({ rawPath: "/a/../b", rawQuery: "x" });
    expect(splitRequestTarget("http://kas.example")).to.deep.equal({ rawPath: "/", rawQuery: "" });
    expect(splitRequestTarget("*")).to.equal(undefined);
    expect(splitRequestTarget("kas.example:443")).to.equal(undefined);
  });
});
