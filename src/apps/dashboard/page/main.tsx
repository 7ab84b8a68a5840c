/**
 * The dashboard page: the primary manager, its epoch and standbys, takeovers, services,
 * servers, sessions, the last minute of throughput and latency, the dead-letter stream with
 * show and replay, and a session's trace. Polls the page's server (/api/state once a second);
 * Preact renders, uPlot draws the charts. Built by scripts/build-dashboard.mjs (esbuild).
 */
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { getJson, type DashboardState, type DeadLetterRow, type ManagerStatus, type SecondView, type SessionTrace, type TimelineEntry } from "./api.js";

const time = (iso: string) => new Date(iso).toLocaleTimeString();
const ms = (x: number | null | undefined) => (x === null || x === undefined ? "–" : `${x} ms`);

function usePoll<T>(path: string, everyMs: number): { data: T | null; error: string | null; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let stopped = false;
    const load = () =>
      getJson<T>(path).then(
        (d) => !stopped && (setData(d), setError(null)),
        (e: Error) => !stopped && setError(`the dashboard's server does not answer (${e.message})`),
      );
    void load();
    const t = setInterval(load, everyMs);
    return () => {
      stopped = true;
      clearInterval(t);
    };
  }, [path, everyMs, tick]);
  return { data, error, reload: () => setTick((x) => x + 1) };
}

function Managers({ st }: { st: ManagerStatus }) {
  return (
    <section class="card" data-testid="managers">
      <h2>Managers</h2>
      <div class="big">
        <span class="label">primary</span> <strong data-testid="primary">{st.node}</strong>
        <span class="label">epoch</span> <strong data-testid="epoch">{st.epoch}</strong>
      </div>
      <p class="muted">primary since {st.since ? time(st.since) : "?"} · {st.sessions} sessions · {(st.heldBytes / 1024).toFixed(0)} KiB held</p>
      <h3>Standbys</h3>
      {st.standbys.length === 0 ? (
        <p class="warn" data-testid="standbys">none: if the primary dies, nothing takes over</p>
      ) : (
        <ul data-testid="standbys">
          {st.standbys.map((s) => (
            <li key={s.node}>
              <strong>{s.node}</strong> last backup {s.lastBackupAgeMs} ms ago <span class={s.lastBackupAgeMs > 1000 ? "warn" : "ok"}>{s.lastBackupAgeMs > 1000 ? "behind" : "current"}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function Timeline({ entries }: { entries: TimelineEntry[] }) {
  return (
    <section class="card" data-testid="timeline">
      <h2>Takeovers</h2>
      {entries.length === 0 ? <p class="muted">nothing yet</p> : null}
      <ol class="timeline">
        {[...entries].reverse().map((e, i) => (
          <li key={`${e.at}-${i}`} class={e.kind.replace(" ", "-")} data-kind={e.kind}>
            <time>{time(e.at)}</time>{" "}
            {e.kind === "takeover" ? (
              <span>
                <strong>{e.node}</strong> took over at epoch <strong>{e.epoch}</strong> from {e.previous?.node} (epoch {e.previous?.epoch})
              </span>
            ) : e.kind === "no primary" ? (
              <span class="warn">no primary answers</span>
            ) : e.kind === "primary back" ? (
              <span>
                <strong>{e.node}</strong> answers again at epoch {e.epoch}
              </span>
            ) : (
              <span>
                <strong>{e.node}</strong> primary at epoch {e.epoch}
              </span>
            )}
          </li>
        ))}
      </ol>
    </section>
  );
}

function Services({ st }: { st: ManagerStatus }) {
  const load = new Map<string, number>();
  for (const s of st.busiest ?? []) if (s.server) load.set(s.server, (load.get(s.server) ?? 0) + s.inFlight);
  return (
    <section class="card wide" data-testid="services">
      <h2>Services and servers</h2>
      <table>
        <thead>
          <tr>
            <th>service</th>
            <th>sessions</th>
            <th>pending</th>
            <th>servers alive</th>
            <th>hedging (extra/requests)</th>
          </tr>
        </thead>
        <tbody>
          {st.services.map((s) => (
            <tr key={s.service}>
              <td>{s.service}</td>
              <td>{s.sessions}</td>
              <td>{s.pending}</td>
              <td class={s.servers === 0 && s.sessions > 0 ? "warn" : ""}>{s.servers}</td>
              <td>{s.hedging && s.hedging.extra > 0 ? `${s.hedging.extra}/${s.hedging.requests}, p95 ${ms(s.hedging.p95Ms)}` : "–"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <table data-testid="servers">
        <thead>
          <tr>
            <th>server</th>
            <th>service</th>
            <th>liveness</th>
            <th>in flight (busiest sessions)</th>
          </tr>
        </thead>
        <tbody>
          {st.servers.map((s) => (
            <tr key={s.id}>
              <td>{s.id}</td>
              <td>{s.service}</td>
              <td class={s.alive ? "ok" : "warn"}>{s.alive ? "alive" : "lost"}</td>
              <td>{load.get(s.id) ?? 0}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Sessions({ st }: { st: ManagerStatus }) {
  const rows = st.busiest ?? [];
  return (
    <section class="card wide" data-testid="sessions">
      <h2>Sessions {rows.length < st.sessions ? <span class="muted">(the {rows.length} with the most pending of {st.sessions})</span> : null}</h2>
      <table>
        <thead>
          <tr>
            <th>session</th>
            <th>client</th>
            <th>service</th>
            <th>server</th>
            <th>pending</th>
            <th>in flight</th>
            <th>answered</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((s) => (
            <tr key={s.id}>
              <td class="mono">{s.id}</td>
              <td>{s.client}</td>
              <td>{s.service}</td>
              <td>{s.server ?? <span class="warn">waiting for a server</span>}</td>
              <td>{s.pending}</td>
              <td>{s.inFlight}</td>
              <td>{s.answered}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Chart({ title, testid, series, data }: { title: string; testid: string; series: string[]; data: uPlot.AlignedData }) {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    if (!el.current) return;
    plot.current = new uPlot(
      {
        width: Math.max(300, el.current.clientWidth),
        height: 180,
        series: [{}, ...series.map((label, i) => ({ label, stroke: ["#2563eb", "#dc2626", "#16a34a"][i], width: 2, spanGaps: true, points: { show: true, size: 4 } }))],
        axes: [{}, { size: 60 }],
      },
      data,
      el.current,
    );
    return () => plot.current?.destroy();
  }, []);
  useEffect(() => plot.current?.setData(data), [data]);
  return (
    <div class="chart" data-testid={testid}>
      <h3>{title}</h3>
      <div ref={el} />
    </div>
  );
}

function Charts({ recent }: { recent: SecondView[] }) {
  const xs = recent.map((r) => r.at / 1000);
  const served = recent.reduce((a, r) => a + r.served, 0);
  return (
    <section class="card wide" data-testid="charts">
      <h2>The last minute</h2>
      <p class="muted" data-testid="served-minute">
        {served} responses served in the last minute; latency is from the primary's dispatch to the response in the queue
      </p>
      <div class="charts">
        <Chart title="responses / s" testid="throughput" series={["served", "errors"]} data={[xs, recent.map((r) => r.served), recent.map((r) => r.errors)]} />
        <Chart title="latency (ms)" testid="latency" series={["p50", "p99"]} data={[xs, recent.map((r) => r.p50Ms), recent.map((r) => r.p99Ms)]} />
      </div>
    </section>
  );
}

function DeadLetters() {
  const { data, error, reload } = usePoll<DeadLetterRow[]>("/api/dlq?limit=100", 3000);
  const [shown, setShown] = useState<{ id: number; text: string } | null>(null);
  const show = async (id: number) => {
    const d = await getJson<Record<string, unknown>>(`/api/dlq/${id}`).catch((e: Error) => ({ error: e.message }));
    setShown({ id, text: JSON.stringify(d, null, 2) });
  };
  const replay = async (id: number) => {
    setShown({ id, text: "replaying… (a new session of its service; up to 30 s)" });
    const r = await getJson<Record<string, unknown>>(`/api/dlq/${id}/replay`, { method: "POST" }).catch((e: Error) => ({ error: e.message }));
    setShown({ id, text: JSON.stringify(r, null, 2) });
    reload();
  };
  const rows = data ?? [];
  return (
    <section class="card wide" data-testid="dlq">
      <h2>Dead letters {data ? <span class="muted">({rows.length}{rows.length === 100 ? "+" : ""})</span> : null}</h2>
      {error ? <p class="warn">{error}</p> : null}
      {rows.length === 0 && data ? <p class="muted">none</p> : null}
      <table>
        <tbody>
          {rows.map((d) => (
            <tr key={d.id} data-dlq-id={d.id}>
              <td>{d.id}</td>
              <td class="mono">{d.code}</td>
              <td>{time(d.at)}</td>
              <td class="mono">{d.session ? `${d.session} #${d.n ?? "?"}` : d.subject}</td>
              <td>{d.message}</td>
              <td>
                <button onClick={() => void show(d.id)}>show</button>
                {d.code === "TANDEM_POISON" ? <button onClick={() => void replay(d.id)}>replay</button> : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown ? (
        <pre class="detail" data-testid="dlq-detail">
          {`#${shown.id}\n${shown.text}`}
        </pre>
      ) : null}
    </section>
  );
}

function Trace() {
  const [session, setSession] = useState("");
  const [trace, setTrace] = useState<SessionTrace | { error: string } | null>(null);
  const go = async (e: Event) => {
    e.preventDefault();
    if (!session) return;
    setTrace(await getJson<SessionTrace>(`/api/trace/${encodeURIComponent(session)}`).catch((err: Error) => ({ error: err.message })));
  };
  return (
    <section class="card wide" data-testid="trace">
      <h2>Trace a session</h2>
      <form onSubmit={(e) => void go(e)}>
        <input placeholder="session id" value={session} onInput={(e) => setSession((e.target as HTMLInputElement).value.trim())} />
        <button type="submit">trace</button> <span class="muted">what its queues and records say (as `tandem trace`)</span>
      </form>
      {trace && "error" in trace ? <p class="warn">{trace.error}</p> : null}
      {trace && !("error" in trace) ? (
        <div class="scroll">
        <table data-testid="trace-result">
          <tbody>
            {trace.requests.map((r) => (
              <tr key={r.n}>
                <td>#{r.n}</td>
                <td>{r.state}</td>
                <td class="mono">{r.steps.map((s) => `${s.step}${s.server ? `@${s.server}` : ""}${s.ok === false ? ` (${s.code ?? "error"})` : ""}`).join(" → ")}</td>
              </tr>
            ))}
            {trace.requests.length === 0 ? (
              <tr>
                <td>nothing in this session's queues</td>
              </tr>
            ) : null}
          </tbody>
        </table>
        </div>
      ) : null}
    </section>
  );
}

function App() {
  const { data, error } = usePoll<DashboardState>("/api/state", 1000);
  const st = data?.primary ?? null;
  return (
    <main>
      <header>
        <h1>Tandem</h1>
        <span class="muted" data-testid="updated">
          {data ? `updated ${time(data.at)}` : "connecting…"}
        </span>
      </header>
      {error ? <p class="warn banner">{error}</p> : null}
      {data?.error ? (
        <p class="warn banner" data-testid="no-primary">
          {data.error}
        </p>
      ) : null}
      <div class="grid">
        {st ? <Managers st={st} /> : null}
        <Timeline entries={data?.timeline ?? []} />
        {st ? <Services st={st} /> : null}
        {st?.recent ? <Charts recent={st.recent} /> : null}
        {st ? <Sessions st={st} /> : null}
        <DeadLetters />
        <Trace />
      </div>
    </main>
  );
}

const root = document.getElementById("app")!;
root.textContent = ""; // the "Loading" line the HTML shows until this script runs
render(<App />, root);
