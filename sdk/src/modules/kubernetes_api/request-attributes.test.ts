import { expect } from "chai";
import { kubernetesRequestAttributes as attrs, kubernetesRoute } from "./request-attributes.js";

describe("Kubernetes request attributes", () => {
  it("names verb, resource, namespace and name as Kubernetes does", () => {
    expect(attrs("GET", "/api/v1/namespaces/default/pods")).to.deep.equal({ verb: "list", resource: "pods", namespace: "default", name: "" });
    expect(attrs("GET", "/api/v1/namespaces/default/pods/web-1")).to.deep.equal({ verb: "get", resource: "pods", namespace: "default", name: "web-1" });
    expect(attrs("GET", "/api/v1/namespaces/default/pods/web-1/log")).to.include({ verb: "get", resource: "pods/log", name: "web-1" });
    expect(attrs("GET", "/api/v1/namespaces/default/configmaps", { watch: true })).to.include({ verb: "watch", resource: "configmaps" });
    expect(attrs("GET", "/api/v1/watch/namespaces/default/configmaps")).to.include({ verb: "watch", namespace: "default" });
    expect(attrs("POST", "/apis/apps/v1/namespaces/prod/deployments")).to.deep.equal({ verb: "create", resource: "deployments.apps", namespace: "prod", name: "" });
    expect(attrs("PATCH", "/apis/apps/v1/namespaces/prod/deployments/web")).to.include({ verb: "patch", name: "web" });
    expect(attrs("PUT", "/api/v1/nodes/n1")).to.deep.equal({ verb: "update", resource: "nodes", namespace: "", name: "n1" });
    expect(attrs("DELETE", "/api/v1/namespaces/x/secrets")).to.include({ verb: "deletecollection" });
    expect(attrs("DELETE", "/api/v1/namespaces/x")).to.deep.equal({ verb: "delete", resource: "namespaces", namespace: "x", name: "x" });
    expect(attrs("GET", "/api/v1/namespaces")).to.include({ verb: "list", resource: "namespaces", namespace: "" });
    expect(attrs("POST", "/api/v1/namespaces/d/pods/p/exec", { upgrade: true })).to.include({ verb: "connect", resource: "pods/exec" });
    expect(attrs("GET", "/version")).to.deep.equal({ verb: "get", resource: "", namespace: "", name: "" });
    expect(attrs("GET", "/apis")).to.include({ verb: "get", resource: "" });
  });
});

describe("Kubernetes routes", () => {
  it("replaces namespaces and names with placeholders, keeping the rest", () => {
    expect(kubernetesRoute("/api/v1/namespaces/default/pods")).to.equal("/api/v1/namespaces/{namespace}/pods");
    expect(kubernetesRoute("/api/v1/namespaces/default/pods/web-1/log")).to.equal("/api/v1/namespaces/{namespace}/pods/{name}/log");
    expect(kubernetesRoute("/apis/apps/v1/namespaces/prod/deployments/web")).to.equal("/apis/apps/v1/namespaces/{namespace}/deployments/{name}");
    expect(kubernetesRoute("/api/v1/watch/namespaces/default/configmaps")).to.equal("/api/v1/watch/namespaces/{namespace}/configmaps");
    expect(kubernetesRoute("/api/v1/namespaces/x")).to.equal("/api/v1/namespaces/{name}");
    expect(kubernetesRoute("/api/v1/namespaces")).to.equal("/api/v1/namespaces");
    expect(kubernetesRoute("/api/v1/nodes/n1")).to.equal("/api/v1/nodes/{name}");
    expect(kubernetesRoute("/version")).to.equal("/version");
    expect(kubernetesRoute("/apis")).to.equal("/apis");
    expect(kubernetesRoute("/openapi/v3/apis/apps/v1")).to.equal("/openapi/v3/*");
    expect(kubernetesRoute("/")).to.equal("/");
  });
});
