import type { Request } from "express";
import { MAX_DB_ID } from "../store/db-util.js";
import { notFound, paramError } from "./http-errors.js";

/** The parsed request body as an object (JSON or form), or {} when absent. */
export function bodyOf(req: Request): Record<string, unknown> {
  const body: unknown = req.body;
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body)) throw paramError("body must be a JSON object");
  return body as Record<string, unknown>;
}

/** A path or body id: a positive integer (numbers and numeric strings accepted, as Grape does). */
export function parseId(value: unknown, name: string): number {
  const text = typeof value === "number" ? String(value) : value;
  if (typeof text !== "string" || !/^[0-9]+$/.test(text)) throw paramError(`${name} is invalid`);
  const id = Number(text);
  // Out of the id range: syntactically fine, but no such record.
  if (id < 1 || id > MAX_DB_ID) throw notFound();
  return id;
}

export function optionalId(value: unknown, name: string): number | undefined {
  return value === undefined || value === null || value === "" ? undefined : parseId(value, name);
}

export function requiredString(body: Record<string, unknown>, name: string): string {
  const value = body[name];
  if (value === undefined || value === null || value === "") throw paramError(`${name} is missing`);
  if (typeof value !== "string" && typeof value !== "number") throw paramError(`${name} is invalid`);
  return String(value);
}

export function optionalString(body: Record<string, unknown>, name: string): string | undefined {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string" && typeof value !== "number") throw paramError(`${name} is invalid`);
  return String(value);
}

/** An integer parameter (numbers and numeric strings, as Grape's Integer type). */
export function optionalInteger(body: Record<string, unknown>, name: string): number | undefined {
  const value = body[name];
  if (value === undefined || value === null || value === "") return undefined;
  const n = typeof value === "number" ? value : typeof value === "string" && /^-?[0-9]{1,15}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) throw paramError(`${name} is invalid`);
  return n;
}

export function optionalBoolean(body: Record<string, unknown>, name: string): boolean | undefined {
  const value = body[name];
  if (value === undefined || value === null || value === "") return undefined;
  if (value === true || value === "true" || value === 1 || value === "1") return true;
  if (value === false || value === "false" || value === 0 || value === "0") return false;
  throw paramError(`${name} is invalid`);
}

/** An array of strings from JSON (`["a"]`), a form (`scopes[]=a&scopes[]=b`) or a comma list. */
export function stringArray(body: Record<string, unknown>, name: string): string[] | undefined {
  const value = body[name] ?? body[`${name}[]`];
  if (value === undefined || value === null) return undefined;
  const items = Array.isArray(value) ? value : typeof value === "string" ? value.split(",") : undefined;
  if (!items || !items.every((v) => typeof v === "string")) throw paramError(`${name} is invalid`);
  return (items as string[]).map((s) => s.trim()).filter((s) => s !== "");
}
