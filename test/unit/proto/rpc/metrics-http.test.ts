import { Agent, request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { TrellisError } from "../../../../proto/core/errors.js";
import { listenMetrics, type MetricsListener, type MetricsSource } from "../../../../proto/rpc/metrics-http.js";

const source: MetricsSource = {
  contentType: "text/plain; version=0.0.4; charset=utf-8",
  metrics: async () => "# HELP up it answers\n# TYPE up gauge\nup 1\n",
};

/** One HTTP call, on a connection of its own unless given an agent: status, headers and body. */
function call(
  url: string,
  method = "GET",
  agent: Agent | false = false,
): Promise<{ status: number; type: string; allow: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        body += d;
      });
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          type: String(res.headers["content-type"] ?? ""),
          allow: String(res.headers.allow ?? ""),
          body,
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

const open: MetricsListener[] = [];
async function listen(s: MetricsSource = source, port = 0): Promise<MetricsListener> {
  const listener = await listenMetrics(s, { host: "127.0.0.1", port }, "--metrics-address");
  open.push(listener);
  return listener;
}

afterEach(async () => {
  for (const l of open.splice(0)) await l.close();
});

describe("listenMetrics", () => {
  it("serves GET /metrics with the registry's text and content type; the URL names the port bound for port 0", async () => {
    const l = await listen();
    expect(l.port).toBeGreaterThan(0);
    expect(l.url).toBe(`http://127.0.0.1:${l.port}/metrics`);
    const res = await call(l.url);
    expect(res).toMatchObject({ status: 200, type: source.contentType, body: "# HELP up it answers\n# TYPE up gauge\nup 1\n" });
    expect((await call(`${l.url}?name[]=up`)).status).toBe(200);
  });

  it("HEAD /metrics answers without a body", async () => {
    const l = await listen();
    expect(await call(l.url, "HEAD")).toMatchObject({ status: 200, type: source.contentType, body: "" });
  });

  it.each(["/", "/metrics/", "/metricsx", "/debug/pprof"])("GET %s is 404", async (path) => {
    const l = await listen();
    const res = await call(`http://127.0.0.1:${l.port}${path}`);
    expect(res.status).toBe(404);
    expect(res.body).toMatch(/metrics are at \/metrics/);
  });

  it.each(["POST", "PUT", "DELETE", "PATCH"])("%s is refused with 405, saying GET", async (method) => {
    const l = await listen();
    const res = await call(l.url, method);
    expect(res.status).toBe(405);
    expect(res.allow).toBe("GET, HEAD");
  });

  it("a source that fails gives 500 with the reason, and the next scrape works again", async () => {
    let fail = true;
    const l = await listen({
      contentType: source.contentType,
      metrics: async () => {
        if (fail) throw new Error("collector broke");
        return "up 1\n";
      },
    });
    expect(await call(l.url)).toMatchObject({ status: 500, body: "could not collect metrics: collector broke\n" });
    fail = false;
    expect(await call(l.url)).toMatchObject({ status: 200, body: "up 1\n" });
  });

  it("a port in use rejects with ALREADY_EXISTS naming the flag and the address, saying to free it or choose another", async () => {
    const taken = await listen();
    const err = await listen(source, taken.port).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrellisError);
    expect((err as TrellisError).reason).toBe("ALREADY_EXISTS");
    expect((err as TrellisError).message).toBe(
      `--metrics-address 127.0.0.1:${taken.port}: the port is in use (another program listens there): free it, or choose another with --metrics-address HOST:PORT, or --metrics-address off for no metrics`,
    );
  });

  it("an address this host does not have is INVALID_ARGUMENT naming it", async () => {
    const err = await listenMetrics(source, { host: "192.0.2.1", port: 0 }, "--metrics-address").catch((e: unknown) => e);
    expect((err as TrellisError).reason).toBe("INVALID_ARGUMENT");
    expect((err as TrellisError).message).toMatch(/^--metrics-address 192\.0\.2\.1:0: this host has no such address; choose another/);
  });

  it("close frees the port, even with a client connected", async () => {
    const l = await listen();
    const agent = new Agent({ keepAlive: true });
    await call(l.url, "GET", agent); // leaves a keep-alive connection open
    expect(Object.keys(agent.freeSockets)).toHaveLength(1);
    await l.close();
    agent.destroy();
    open.splice(open.indexOf(l), 1);
    const again = await listen(source, l.port);
    expect(again.port).toBe(l.port);
    await expect(call(l.url)).resolves.toMatchObject({ status: 200 });
  });
});
