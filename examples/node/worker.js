// A natsgate worker in Node.js, on @nats-io/services (the JavaScript
// counterpart of nats.go's micro package). It serves a small in-memory
// item store on the subjects natsgate.yaml beside it routes:
//
//   GET    /items/{id}  -> items.<id>.get     200 JSON, or a 404 service error
//   POST   /items       -> items.create       Http-Status: 201 and a Location
//   DELETE /items/{id}  -> items.<id>.delete  Http-Status: 204, or a 404 service error
//
// Run: npm ci --prefix examples/node, then
//   NATS_URL=nats://127.0.0.1:4222 node examples/node/worker.js
//
// The headers it reads and writes are natsgate's wire protocol (see the
// README's "Wire protocol, for worker authors", and the Go package wire).
import { connect, headers } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";

// The protocol's header names. NATS header names are case-sensitive.
const H = {
  method: "Http-Method",
  route: "Http-Route",
  param: (name) => `Http-Param-${name}`,
  shadow: "Http-Shadow",
  status: "Http-Status",
  serverTiming: "Server-Timing",
};

const items = new Map([["1", { id: "1", name: "first" }]]);
let nextId = 2;

// reply sends body (an object is sent as JSON) with status (undefined:
// natsgate's default, 200), extra headers, and the worker's time since
// start in Server-Timing.
function reply(msg, start, { status, body, header = {} } = {}) {
  const h = headers();
  if (status !== undefined) h.set(H.status, String(status));
  for (const [k, v] of Object.entries(header)) h.set(k, v);
  let data;
  if (body !== undefined && typeof body !== "string") {
    h.set("Content-Type", "application/json");
    data = JSON.stringify(body);
  } else {
    data = body;
  }
  h.set(H.serverTiming, `worker;dur=${(performance.now() - start).toFixed(3)}`);
  msg.respond(data, { headers: h });
}

// header is the first value of a request header, or "".
const header = (msg, name) => msg.headers?.get(name) ?? "";

const nc = await connect({
  servers: process.env.NATS_URL || "nats://127.0.0.1:4222",
  name: "natsgate-node-worker",
  maxReconnectAttempts: -1,
});
const svc = await new Svcm(nc).add({
  name: "natsgate-node-items",
  version: "1.0.0",
  description: "natsgate's Node.js example worker",
  queue: "natsgate-node", // every instance shares the load
});

svc.addEndpoint("get-item", {
  subject: "items.*.get",
  handler: (err, msg) => {
    if (err) return;
    const start = performance.now();
    const id = header(msg, H.param("id"));
    const item = items.get(id);
    if (!item) {
      // natsgate answers 404 with a problem body whose detail is this text.
      msg.respondError(404, `no item "${id}"`);
      return;
    }
    reply(msg, start, { body: { ...item, route: header(msg, H.route), served_by: "node" } });
  },
});

svc.addEndpoint("create-item", {
  subject: "items.create",
  handler: (err, msg) => {
    if (err) return;
    const start = performance.now();
    let name;
    try {
      name = msg.json().name;
    } catch {
      // not JSON: name stays undefined
    }
    if (typeof name !== "string" || name === "") {
      msg.respondError(400, 'the body must be JSON with a "name"');
      return;
    }
    const item = { id: String(nextId), name };
    // A shadow copy's answer is only compared: it must not create anything.
    if (header(msg, H.shadow) !== "true") {
      items.set(item.id, item);
      nextId++;
    }
    reply(msg, start, { status: 201, body: item, header: { Location: `/items/${item.id}` } });
  },
});

svc.addEndpoint("delete-item", {
  subject: "items.*.delete",
  handler: (err, msg) => {
    if (err) return;
    const start = performance.now();
    const id = header(msg, H.param("id"));
    if (!items.has(id)) {
      msg.respondError(404, `no item "${id}"`);
      return;
    }
    if (header(msg, H.shadow) !== "true") items.delete(id);
    reply(msg, start, { status: 204 });
  },
});

// The subscriptions are made once the server has seen them.
await nc.flush();
console.log(`natsgate-node-worker ready on ${nc.getServer()}`);

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await svc.stop();
    await nc.drain();
    process.exit(0);
  });
}
