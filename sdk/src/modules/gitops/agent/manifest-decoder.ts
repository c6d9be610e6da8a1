import { LineCounter, parseAllDocuments, isMap, isScalar, type Document } from "yaml";

/** One Kubernetes object of a manifest project, with where it comes from. */
export interface ManifestObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string>; [k: string]: unknown };
  [field: string]: unknown;
}

export interface DecodedObject {
  object: ManifestObject;
  /** The file the object comes from. */
  source: string;
  /** 1-based line of the document (or List item) in `source`. */
  line: number;
}

/** A manifest file that cannot be used: names file and line. */
export class ManifestError extends Error {
  override readonly name = "ManifestError";
  constructor(
    readonly source: string,
    readonly line: number | undefined,
    readonly reason: string,
  ) {
    super(`${source}${line === undefined ? "" : `:${line}`}: ${reason}`);
  }
}

/**
 * Decodes a commit's manifest files (YAML, several documents per file, or JSON) into objects, as
 * GitLab's agent does with kubectl's builder: `kind: List` (and `*List`) is flattened, empty
 * documents are skipped. Every problem of every file is collected; if there is any, nothing of the
 * commit may be applied, and the error names each file and line.
 */
export function decodeManifests(files: ReadonlyArray<{ source: string; data: Uint8Array }>): DecodedObject[] {
  const objects: DecodedObject[] = [];
  const problems: ManifestError[] = [];
  for (const { source, data } of files) {
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(data);
    } catch {
      problems.push(new ManifestError(source, undefined, "is not valid UTF-8"));
      continue;
    }
    const lines = new LineCounter();
    let docs: Document.Parsed[];
    try {
      docs = parseAllDocuments(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false }) as Document.Parsed[];
    } catch (err) {
      problems.push(new ManifestError(source, undefined, `invalid YAML: ${(err as Error).message}`));
      continue;
    }
    if (!Array.isArray(docs)) docs = [docs];
    for (const doc of docs) {
      if (doc.errors.length > 0) {
        for (const e of doc.errors) problems.push(new ManifestError(source, e.linePos?.[0]?.line ?? lines.linePos(e.pos[0]).line, `invalid YAML: ${e.message.split("\n")[0]}`));
        continue;
      }
      // An empty document (between two "---", or only comments) is skipped.
      if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) continue;
      const line = lines.linePos(doc.contents.range?.[0] ?? 0).line;
      if (!isMap(doc.contents)) {
        problems.push(new ManifestError(source, line, "a manifest document must be a mapping (an object)"));
        continue;
      }
      const value = doc.toJS({ maxAliasCount: 100 }) as Record<string, unknown>;
      const kind = value.kind;
      if (typeof kind === "string" && kind.endsWith("List") && Array.isArray(value.items)) {
        const items = (doc.contents.get("items", true) as { items?: Array<{ range?: [number, number, number] }> } | undefined)?.items ?? [];
        (value.items as unknown[]).forEach((item, i) => {
          const itemLine = lines.linePos(items[i]?.range?.[0] ?? doc.contents!.range?.[0] ?? 0).line;
          checkObject(item, source, itemLine, objects, problems);
        });
        continue;
      }
      checkObject(value, source, line, objects, problems);
    }
  }
  if (problems.length > 0) throw new ManifestsInvalidError(problems);
  return objects;
}

/** Every problem of a commit's manifests. */
export class ManifestsInvalidError extends Error {
  override readonly name = "ManifestsInvalidError";
  constructor(readonly problems: readonly ManifestError[]) {
    super(`invalid manifests: ${problems.map((p) => p.message).join("; ")}`);
  }
}

function checkObject(value: unknown, source: string, line: number, objects: DecodedObject[], problems: ManifestError[]): void {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    problems.push(new ManifestError(source, line, "a manifest object must be a mapping"));
    return;
  }
  const o = value as Record<string, unknown>;
  const missing: string[] = [];
  if (typeof o.apiVersion !== "string" || o.apiVersion === "") missing.push("apiVersion");
  if (typeof o.kind !== "string" || o.kind === "") missing.push("kind");
  const metadata = o.metadata as Record<string, unknown> | undefined;
  if (!metadata || typeof metadata !== "object" || typeof metadata.name !== "string" || metadata.name === "") {
    missing.push(metadata && typeof metadata.generateName === "string" ? "metadata.name (generateName is not supported: objects must have stable names)" : "metadata.name");
  }
  if (missing.length > 0) {
    problems.push(new ManifestError(source, line, `object${typeof o.kind === "string" ? ` of kind ${o.kind}` : ""} is missing ${missing.join(", ")}`));
    return;
  }
  if (metadata!.namespace !== undefined && typeof metadata!.namespace !== "string") {
    problems.push(new ManifestError(source, line, "metadata.namespace must be a string"));
    return;
  }
  objects.push({ object: o as unknown as ManifestObject, source, line });
}
