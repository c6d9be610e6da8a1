/** Throws when two of `items` share a name (`what` names them in the error, e.g. "KAS modules"). */
export function assertUniqueNames(items: ReadonlyArray<{ readonly name: string }>, what: string): void {
  const names = new Set<string>();
  for (const { name } of items) {
    if (names.has(name)) throw new Error(`two ${what} named ${name}`);
    names.add(name);
  }
}
