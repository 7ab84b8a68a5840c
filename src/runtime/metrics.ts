/**
 * A process's Prometheus metrics (prom-client: the client library Prometheus users know, kept
 * up to date, with histograms that need no hand-written buckets logic). Every role records into
 * the same registry; figures that are a view of state (the manager's table, consumer lag, the
 * dead-letter stream) are read when scraped, by collectors the roles add. The names are listed
 * in the README's "Metrics and health" section.
 *
 * Hot paths take the labelled children once (`forService`) so that a request costs a few
 * increments, not a label lookup each.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Seconds: from half a millisecond (a local round trip) to a minute (long work). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface ServiceMetrics {
  requests: { inc(): void };
  roundTrip: { observe(seconds: number): void };
  clientInFlight: { inc(): void; dec(): void };
  handlerSeconds: { observe(seconds: number): void };
  serverInFlight: { inc(): void; dec(): void };
  dispatched: { inc(): void };
  delivered: { inc(by?: number): void };
  /** Requests a handler finished, by outcome and error code (the children made once each). */
  handled: { inc(outcome: string, code: string): void };
  /** Responses that reached the application, the same way. */
  responses: { inc(outcome: string, code: string): void };
}

export class Metrics {
  readonly registry = new Registry();
  private readonly collectors: Array<() => void | Promise<void>> = [];
  private readonly services = new Map<string, ServiceMetrics>();
  private defaults = false;

  // Client side.
  readonly requests = new Counter({ name: "tandem_client_requests_total", help: "Requests the clients of this process sent", labelNames: ["service"], registers: [this.registry] });
  readonly responses = new Counter({
    name: "tandem_client_responses_total",
    help: "Responses that reached the application, by outcome (ok, error) and error code",
    labelNames: ["service", "outcome", "code"],
    registers: [this.registry],
  });
  readonly roundTrip = new Histogram({
    name: "tandem_client_round_trip_seconds",
    help: "From a request's send to its response reaching the application",
    labelNames: ["service"],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly clientInFlight = new Gauge({ name: "tandem_client_in_flight", help: "Requests sent whose response has not reached the application", labelNames: ["service"], registers: [this.registry] });
  readonly clientSessions = new Gauge({ name: "tandem_client_sessions", help: "Sessions each client of this process has open", labelNames: ["client"], registers: [this.registry] });

  // Server side.
  readonly handled = new Counter({
    name: "tandem_server_handled_total",
    help: "Requests a handler of this process finished, by outcome (ok, error, retry, cancelled) and error code",
    labelNames: ["service", "outcome", "code"],
    registers: [this.registry],
  });
  readonly handlerSeconds = new Histogram({ name: "tandem_server_handler_seconds", help: "Time in the handler", labelNames: ["service"], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly serverInFlight = new Gauge({ name: "tandem_server_in_flight", help: "Requests in a handler of this process now", labelNames: ["service"], registers: [this.registry] });
  readonly serverRegistered = new Gauge({ name: "tandem_server_registered", help: "1 while the server sessions of this process are registered with a primary", labelNames: ["service", "server"], registers: [this.registry] });

  // Manager side: events counted as they happen.
  readonly dispatched = new Counter({ name: "tandem_manager_dispatched_total", help: "Work messages the primary sent to servers (retries and hedged copies included)", labelNames: ["service"], registers: [this.registry] });
  readonly delivered = new Counter({ name: "tandem_manager_delivered_total", help: "Responses the primary delivered to clients (acknowledged)", labelNames: ["service"], registers: [this.registry] });
  readonly failedAttempts = new Counter({
    name: "tandem_manager_failed_attempts_total",
    help: "Attempts that failed and count toward the retry policy (a server died holding the work, or a handler's RetryableError), by code",
    labelNames: ["service", "code"],
    registers: [this.registry],
  });
  readonly deadLettered = new Counter({ name: "tandem_dead_lettered_total", help: "Entries this process put into the dead-letter stream, by code (TANDEM_POISON: quarantined requests)", labelNames: ["code"], registers: [this.registry] });
  readonly workSeconds = new Histogram({
    name: "tandem_manager_work_seconds",
    help: "From the primary's dispatch of a request to its response read from the queue",
    labelNames: ["service"],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly takeovers = new Counter({ name: "tandem_manager_takeovers_total", help: "Times this manager took the lease (became primary)", registers: [this.registry] });

  // Manager side: views of its state, set by its collector when scraped.
  readonly primary = new Gauge({ name: "tandem_manager_primary", help: "1 while this manager is primary", registers: [this.registry] });
  readonly epoch = new Gauge({ name: "tandem_manager_epoch", help: "The epoch this manager serves or last saw", registers: [this.registry] });
  readonly leaseAge = new Gauge({ name: "tandem_manager_primary_seconds", help: "Seconds since this manager became primary (0 when standby)", registers: [this.registry] });
  readonly standbyBackupAge = new Gauge({ name: "tandem_manager_standby_backup_age_seconds", help: "Primary: age of each standby's last backup acknowledgement; standby: age of the last backup it got", labelNames: ["standby"], registers: [this.registry] });
  readonly sessions = new Gauge({ name: "tandem_manager_sessions", help: "Open sessions, by service", labelNames: ["service"], registers: [this.registry] });
  readonly pending = new Gauge({ name: "tandem_manager_pending", help: "Requests stored and not yet answered, by service", labelNames: ["service"], registers: [this.registry] });
  readonly sessionPending = new Gauge({ name: "tandem_manager_session_pending", help: "Requests stored and not yet answered, for the 50 sessions with the most", labelNames: ["service", "session"], registers: [this.registry] });
  readonly serversAlive = new Gauge({ name: "tandem_manager_servers_alive", help: "Server sessions with a current heartbeat, by service", labelNames: ["service"], registers: [this.registry] });
  readonly hedgeRequests = new Gauge({ name: "tandem_manager_hedged_requests", help: "Requests of hedged sessions, by service (this primary's term)", labelNames: ["service"], registers: [this.registry] });
  readonly hedgeExtra = new Gauge({ name: "tandem_manager_hedge_extra_copies", help: "Extra copies hedging sent, by service (this primary's term): the extra work", labelNames: ["service"], registers: [this.registry] });
  readonly consumerLag = new Gauge({ name: "tandem_manager_consumer_lag", help: "Messages the primary's consumer of each queue stream has not read yet", labelNames: ["stream"], registers: [this.registry] });
  readonly dlqMessages = new Gauge({ name: "tandem_dlq_messages", help: "Entries in the dead-letter stream", registers: [this.registry] });

  /** The labelled children of one service, made once. */
  forService(service: string): ServiceMetrics {
    let m = this.services.get(service);
    if (!m) {
      const l = { service };
      m = {
        requests: this.requests.labels(l),
        roundTrip: this.roundTrip.labels(l),
        clientInFlight: this.clientInFlight.labels(l),
        handlerSeconds: this.handlerSeconds.labels(l),
        serverInFlight: this.serverInFlight.labels(l),
        dispatched: this.dispatched.labels(l),
        delivered: this.delivered.labels(l),
        handled: byOutcome(this.handled, service),
        responses: byOutcome(this.responses, service),
      };
      this.services.set(service, m);
    }
    return m;
  }

  /** A function that sets gauges from state, run before each scrape; returns its removal. */
  addCollector(fn: () => void | Promise<void>): () => void {
    this.collectors.push(fn);
    return () => {
      const i = this.collectors.indexOf(fn);
      if (i >= 0) this.collectors.splice(i, 1);
    };
  }

  /** Node's own figures (event loop lag, heap, GC, CPU): only when the metrics are served. */
  withProcessMetrics(): void {
    if (this.defaults) return;
    this.defaults = true;
    collectDefaultMetrics({ register: this.registry, prefix: "tandem_" });
  }

  /** The text exposition format, after the collectors ran (one failing skips only its figures). */
  async render(): Promise<string> {
    await Promise.all(this.collectors.map((c) => Promise.resolve().then(c).catch(() => {})));
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** A counter by outcome and code of one service: a labelled child per outcome and code, made once. */
function byOutcome(counter: Counter<"service" | "outcome" | "code">, service: string): ServiceMetrics["handled"] {
  const children = new Map<string, { inc(): void }>();
  return {
    inc(outcome, code) {
      const key = `${outcome} ${code}`;
      let c = children.get(key);
      if (!c) {
        c = counter.labels({ service, outcome, code });
        children.set(key, c);
      }
      c.inc();
    },
  };
}
