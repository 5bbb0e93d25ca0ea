// Child process of the kill -9 test: opens a FileStore and writes without pause (creates and
// updates across namespaces), printing one JSON line per write only after its promise resolved,
// i.e. once the store acknowledged it as durable. Usage: node this.ts DIR ROUND

import { FileStore } from "./file-store.ts";
import { serviceAt } from "./store-test-objects.fixture.ts";

const [dir, round] = process.argv.slice(2) as [string, string];
const store = new FileStore(dir);
await store.open();
process.stdout.write(`${JSON.stringify({ ready: true, resourceVersion: store.resourceVersion() })}\n`);

const created: string[] = [];
for (let seq = 1; seq < 1_000_000; seq++) {
  // Every third write updates an object created earlier in this round.
  const update = seq % 3 === 0 && created.length > 0;
  const name = update ? created[seq % created.length]! : `r${round}-o${seq}`;
  const obj = serviceAt(`ns-${name.length % 3}`, name, seq);
  const stored = update ? await store.update(obj) : await store.create(obj);
  if (!update) created.push(name);
  process.stdout.write(
    `${JSON.stringify({ namespace: obj.metadata.namespace, name, seq, resourceVersion: stored.metadata.resourceVersion })}\n`,
  );
}
