// A test's own OTLP/HTTP trace receiver on loopback: takes `POST <any path>` with a protobuf
// ExportTraceServiceRequest (what GitLab's otlp_endpoint and @kasbridge/sdk/otlp send), decodes
// the spans (the fields the tests look at) and keeps them with the request's headers. With TLS
// when given a certificate.
import http from "node:http";
import https from "node:https";
import { gunzipSync } from "node:zlib";
import { BinaryReader, type WireType } from "@bufbuild/protobuf/wire";
import { closeServer, listen } from "./servers.js";

export type AttributeValue = string | number | boolean | undefined;

/** One span as exported, ids in hex ("" for no parent). */
export interface ReceivedSpan {
  serviceName: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** OTLP's SpanKind: 1 internal, 2 server, 3 client. */
  kind: number;
  attributes: Record<string, AttributeValue>;
  /** OTLP's status code: 0 unset, 1 ok, 2 error. */
  statusCode: number;
}

export const SPAN_KIND_SERVER = 2;
export const SPAN_KIND_CLIENT = 3;

export interface OtlpReceiver {
  /** `http(s)://127.0.0.1:<port>/v1/traces`. */
  url: string;
  readonly spans: ReceivedSpan[];
  /** The headers of every export request, in order. */
  readonly requests: http.IncomingHttpHeaders[];
  close(): Promise<void>;
}

export async function startOtlpReceiver(tls?: { cert: string | Buffer; key: string | Buffer }): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const requests: http.IncomingHttpHeaders[] = [];
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        let body = Buffer.concat(chunks);
        if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
        if (req.method !== "POST" || req.headers["content-type"] !== "application/x-protobuf") {
          res.writeHead(415).end();
          return;
        }
        requests.push(req.headers);
        spans.push(...decodeExportTraceServiceRequest(body));
        // An empty ExportTraceServiceResponse.
        res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
      } catch (error) {
        res.writeHead(400, { "content-type": "text/plain" }).end(String(error));
      }
    });
  };
  const server = tls ? https.createServer(tls, onRequest) : http.createServer(onRequest);
  const port = await listen(server);
  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}/v1/traces`,
    spans,
    requests,
    close: async () => {
      server.closeAllConnections();
      await closeServer(server);
    },
  };
}

/** opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest -> its spans. */
export function decodeExportTraceServiceRequest(bytes: Uint8Array): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  // ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
  fields(bytes, (no, r) => {
    if (no !== 1) return false;
    let serviceName = "";
    const scopeSpans: Uint8Array[] = [];
    // ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
    fields(r.bytes(), (rsNo, rs) => {
      if (rsNo === 1) {
        // Resource { repeated KeyValue attributes = 1; }
        fields(rs.bytes(), (resNo, res) => {
          if (resNo !== 1) return false;
          const [key, value] = keyValue(res.bytes());
          if (key === "service.name") serviceName = String(value);
          return true;
        });
        return true;
      }
      if (rsNo === 2) {
        scopeSpans.push(rs.bytes());
        return true;
      }
      return false;
    });
    for (const scope of scopeSpans) {
      // ScopeSpans { repeated Span spans = 2; }
      fields(scope, (ssNo, ss) => {
        if (ssNo !== 2) return false;
        out.push({ serviceName, ...span(ss.bytes()) });
        return true;
      });
    }
    return true;
  });
  return out;
}

/** opentelemetry.proto.trace.v1.Span: the fields the tests read. */
function span(bytes: Uint8Array): Omit<ReceivedSpan, "serviceName"> {
  const s: Omit<ReceivedSpan, "serviceName"> = { traceId: "", spanId: "", parentSpanId: "", name: "", kind: 0, attributes: {}, statusCode: 0 };
  fields(bytes, (no, r) => {
    switch (no) {
      case 1:
        s.traceId = hex(r.bytes());
        return true;
      case 2:
        s.spanId = hex(r.bytes());
        return true;
      case 4:
        s.parentSpanId = hex(r.bytes());
        return true;
      case 5:
        s.name = r.string();
        return true;
      case 6:
        s.kind = r.int32();
        return true;
      case 9: {
        const [key, value] = keyValue(r.bytes());
        s.attributes[key] = value;
        return true;
      }
      case 15:
        // Status { string message = 2; StatusCode code = 3; }
        fields(r.bytes(), (stNo, st) => {
          if (stNo !== 3) return false;
          s.statusCode = st.int32();
          return true;
        });
        return true;
      default:
        return false;
    }
  });
  return s;
}

/** KeyValue { string key = 1; AnyValue value = 2; } with AnyValue's scalar cases. */
function keyValue(bytes: Uint8Array): [string, AttributeValue] {
  let key = "";
  let value: AttributeValue;
  fields(bytes, (no, r) => {
    if (no === 1) {
      key = r.string();
      return true;
    }
    if (no !== 2) return false;
    // AnyValue { string_value = 1; bool_value = 2; int_value = 3; double_value = 4; ... }
    fields(r.bytes(), (avNo, av) => {
      if (avNo === 1) value = av.string();
      else if (avNo === 2) value = av.bool();
      else if (avNo === 3) value = Number(av.int64());
      else if (avNo === 4) value = av.double();
      else return false;
      return true;
    });
    return true;
  });
  return [key, value];
}

/** Calls `read` for every field of a message; a field it does not read (returns false) is skipped. */
function fields(bytes: Uint8Array, read: (fieldNo: number, reader: BinaryReader) => boolean): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (!read(no, reader)) reader.skip(wireType as WireType, no);
  }
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}
