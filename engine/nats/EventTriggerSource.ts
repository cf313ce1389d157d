import { Evaluator, Lexer, Parser, data } from '@actions/expressions';
import { connect, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager, type ConsumerMessages, type ConsumerNotification, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { CaravanError } from '../errors/CaravanError.js';
import { forgetOldest } from '../run/forgetOldest.js';
import type { Logger } from '../run/Logger.js';
import { findTemplates } from '../spec/parseExpression.js';
import type { Workflow } from '../spec/Workflow.js';
import { NANOS_PER_MS, createStreamIfMissing, ensureConsumer } from './jetStreamAdmin.js';
import { natsConnectionOptions } from './natsConnectionOptions.js';

export const TRIGGERS_STREAM = 'CARAVAN_TRIGGERS';
export const TRIGGERS_DURABLE = 'caravan-controller';
/** The largest payload delivered; a bigger one is refused. */
export const MAX_TRIGGER_PAYLOAD_BYTES = 64 * 1024;

/** One event trigger of one workflow; `params` are the trigger's fixed ones. */
export interface EventTriggerSubject {
  workflow: string;
  subject: string;
  params?: Record<string, unknown>;
}

/** A message on a trigger subject, for one workflow. */
export interface TriggerEvent {
  workflow: string;
  /** The subject the message was published on (not the trigger's pattern). */
  subject: string;
  /** The message's id: its Nats-Msg-Id header, else the stream sequence as `seq:<n>`. */
  id: string;
  /** The trigger's fixed params, `${{ event.* }}` resolved, overridden by the payload's. */
  params: Record<string, unknown>;
  /** Ack after the run is started or refused for good. Resolves once the server has it. */
  ack(): Promise<void>;
  /** Refused for good: not delivered again. The reason is logged. */
  term(reason: string): Promise<void>;
  /** Not handled now: delivered again (after `delayMs`, default at once). */
  nak(delayMs?: number): Promise<void>;
}

/** A trigger whose subject the stream cannot capture: it never fires. */
export interface UncapturedTrigger {
  workflow: string;
  subject: string;
  reason: string;
}

export interface EventTriggerSourceOptions {
  /**
   * Servers (credentials and TLS then come from the environment, see natsConnectionOptions),
   * connection options, or an open connection: that one stays open at close().
   */
  connection: string[] | NodeConnectionOptions | NatsConnection;
  subjects: readonly EventTriggerSubject[];
  logger: Logger;
  stream?: string;
  durable?: string;
  /** Told of every payload refused, once per workflow the message was for. */
  onRefused?: (workflow: string, subject: string, reason: string) => void;
  /** A message not acknowledged for this long goes out again (default 30 s; kept alive while held here). */
  ackWaitMs?: number;
  /** How long a Nats-Msg-Id is remembered, when this creates the stream (default 2 min). */
  duplicateWindowMs?: number;
}

/** The schema's pattern for an event trigger's subject. */
const SUBJECT = /^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?$/;
/**
 * Subjects a trigger must not capture: NATS's own (JetStream's API and advisories, system
 * events, KV and object stores, request replies) and Caravan's streams and cancels. Stored
 * in a stream, each of them would be copied there forever, or refused by the server.
 */
const RESERVED = ['$JS.>', '$SYS.>', '$KV.>', '$O.>', '_INBOX.>', 'caravan.ev.>', 'caravan.work.>', 'caravan.ctx.>', 'caravan.control.>'];
/** Messages held unacknowledged at once: the server sends no more until some are settled. */
const MAX_HELD = 64;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

interface Route {
  workflow: string;
  pattern: string;
  params: Record<string, unknown>;
  /** Why the fixed params cannot be resolved (a bad `${{ }}`): every message is refused for this workflow. */
  problem: string | undefined;
}

/** What every log line about a message carries (never its payload). */
interface MessageFields {
  subject: string;
  id: string;
  seq: number;
  deliveries: number;
}

/** A message held here until each of its workflows' events is settled. */
interface Held {
  /** The latest delivery: the answer goes to it. */
  m: JsMsg;
  open: number;
  settled: Set<string>;
  acked: boolean;
  nakDelayMs: number | undefined;
}

/**
 * Messages that start runs: a JetStream work-queue stream captures every event trigger's
 * subject, so a message published while no controller runs waits there, and one durable pull
 * consumer with explicit acks hands each message out until it is settled. A message becomes
 * one TriggerEvent per workflow whose trigger matches its subject; a payload that is not a
 * JSON object of at most 64 KiB is refused (logged without the payload, counted, terminated).
 */
export class EventTriggerSource {
  private routes: Route[] = [];
  private captured: string[] = [];
  private uncaptured: UncapturedTrigger[] = [];
  private messages: ConsumerMessages | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly held = new Map<number, Held>();
  /** Workflows that settled a message another one nak'ed: its redelivery is not theirs again. */
  private readonly settledBefore = new Map<number, Set<string>>();
  private readonly queue: TriggerEvent[] = [];
  private wake: (() => void) | undefined;
  private reading = false;
  private closing: Promise<void> | undefined;
  private updating: Promise<unknown> = Promise.resolve();
  private repairing: Promise<void> | undefined;
  private refusals = 0;
  private readonly log: Logger;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly options: EventTriggerSourceOptions,
  ) {
    this.log = options.logger.child({ stream: this.stream });
  }

  /** Connects, captures `subjects` (creating the stream and the durable if missing) and starts receiving. */
  static async open(options: EventTriggerSourceOptions): Promise<EventTriggerSource> {
    const given = options.connection;
    const shared = isConnection(given);
    const nc = shared ? given : await connect(Array.isArray(given) ? await natsConnectionOptions(process.env, given) : given);
    try {
      const source = new EventTriggerSource(nc, !shared, await jetstreamManager(nc), jetstream(nc), options);
      await source.updateSubjects(options.subjects);
      await source.start();
      return source;
    } catch (e) {
      // `e` is what the caller must see; a connection that fails to close is not used again.
      if (!shared) await nc.close().catch((closeErr: unknown) => options.logger.debug('closing the trigger connection failed', { err: closeErr }));
      throw e;
    }
  }

  get stream(): string {
    return this.options.stream ?? TRIGGERS_STREAM;
  }

  get durable(): string {
    return this.options.durable ?? TRIGGERS_DURABLE;
  }

  /** Payloads refused since open, counted once per workflow the message was for. */
  get refused(): number {
    return this.refusals;
  }

  /** The subjects the stream captures (overlapping triggers are merged into one, wider, subject). */
  get streamSubjects(): readonly string[] {
    return this.captured;
  }

  /** Triggers that never fire: their subject is not a subject, or the stream may not capture it. */
  get uncapturedTriggers(): readonly UncapturedTrigger[] {
    return this.uncaptured;
  }

  /** The events, in arrival order; one reader. Ends at close(). */
  async *events(): AsyncIterable<TriggerEvent> {
    if (this.reading) throw new CaravanError('INTERNAL', 'EventTriggerSource.events() has one reader');
    this.reading = true;
    for (;;) {
      const next = this.queue.shift();
      if (next !== undefined) yield next;
      else if (this.closing !== undefined) return;
      else await new Promise<void>((r) => { this.wake = r; });
    }
  }

  /**
   * Brings the stream's subjects and the routing to the workflows' event triggers (they
   * change with each commit). Triggers that cannot be captured are logged and listed in
   * uncapturedTriggers; a failure to update the stream is thrown. Calls run one at a time.
   */
  updateSubjects(subjects: readonly EventTriggerSubject[]): Promise<void> {
    const next = this.updating.then(() => this.applySubjects(subjects));
    // The chain only orders the updates: each caller gets its own failure from `next`.
    this.updating = next.catch(() => undefined);
    return next;
  }

  /**
   * Stops receiving and ends events(). Messages not settled yet are nak'ed, so that the next
   * controller has them at once. Closes the connection unless the caller gave it.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.heartbeat);
      this.queue.length = 0;
      this.wake?.();
      await this.messages?.close().catch((e: unknown) => this.log.warn('stopping the trigger consumer failed', { err: e }));
      for (const h of this.held.values()) this.respond(h.m, () => h.m.nak());
      this.held.clear();
      if (this.ownsConnection) await this.nc.drain().catch((e: unknown) => this.log.warn('closing the trigger connection failed', { err: e }));
      else await this.nc.flush().catch((e: unknown) => this.log.warn('sending the trigger naks failed', { err: e }));
    })();
    return this.closing;
  }

  private async applySubjects(subjects: readonly EventTriggerSubject[]): Promise<void> {
    const routes: Route[] = [];
    const uncaptured: UncapturedTrigger[] = [];
    for (const s of subjects) {
      if (!SUBJECT.test(s.subject)) uncaptured.push({ workflow: s.workflow, subject: s.subject, reason: 'not a NATS subject of tokens, `*` and a final `>`' });
      else routes.push({ workflow: s.workflow, pattern: s.subject, params: s.params ?? {}, problem: fixedParamsProblem(s.params ?? {}) });
    }
    const plan = planCapture([...new Set(routes.map((r) => r.pattern))].sort(), [...RESERVED.map((subject) => ({ subject, owner: 'NATS or Caravan' })), ...(await this.otherStreamsSubjects())]);
    for (const r of routes) {
      const reason = plan.refused.get(r.pattern);
      if (reason !== undefined) uncaptured.push({ workflow: r.workflow, subject: r.pattern, reason });
      else if (r.problem !== undefined) this.log.error('event trigger params cannot be resolved; its messages will be refused', { workflow: r.workflow, subject: r.pattern, reason: r.problem });
    }
    for (const u of uncaptured) this.log.error('event trigger cannot be captured; it will not fire', { workflow: u.workflow, subject: u.subject, reason: u.reason });
    // Routing first: a message the new subjects capture must find its workflow.
    this.routes = routes.filter((r) => !plan.refused.has(r.pattern));
    this.uncaptured = uncaptured;
    await this.applyStream(plan.captures);
    if (!sameSet(this.captured, plan.captures)) this.log.info('event trigger subjects captured', { subjects: plan.captures });
    this.captured = plan.captures;
  }

  /** Subjects of every other stream: JetStream refuses a stream whose subjects overlap another's. */
  private async otherStreamsSubjects(): Promise<Array<{ subject: string; owner: string }>> {
    const out: Array<{ subject: string; owner: string }> = [];
    try {
      for await (const s of this.jsm.streams.list()) {
        if (s.config.name !== this.stream) for (const subject of s.config.subjects ?? []) out.push({ subject, owner: `stream ${s.config.name}` });
      }
    } catch (e) {
      // Without the list the update still runs; a clash is then the server's error, thrown.
      this.log.warn('could not list the streams; trigger subjects are not checked against theirs', { err: e });
    }
    return out;
  }

  /** Creates the stream, or sets its subjects (its other settings are left as an operator tuned them). */
  private async applyStream(captures: string[]): Promise<void> {
    // With no subjects JetStream captures the stream's name, which nobody publishes to.
    const subjects = captures.length > 0 ? captures : [this.stream];
    try {
      const created = await createStreamIfMissing(this.jsm, {
        name: this.stream,
        subjects,
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        duplicate_window: (this.options.duplicateWindowMs ?? 120_000) * NANOS_PER_MS,
      });
      if (!created && !sameSet((await this.jsm.streams.info(this.stream)).config.subjects ?? [], subjects)) await this.jsm.streams.update(this.stream, { subjects });
    } catch (e) {
      this.log.error('could not set the trigger stream subjects', { subjects, err: e });
      throw new CaravanError('BUS_UNAVAILABLE', `could not set the subjects of the JetStream stream ${this.stream}: ${(e as Error).message}`, { cause: e, data: { stream: this.stream, subjects } });
    }
  }

  private ensureConsumer(): Promise<void> {
    return ensureConsumer(this.jsm, this.stream, {
      durable_name: this.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: this.ackWaitMs * NANOS_PER_MS,
      max_ack_pending: MAX_HELD,
    });
  }

  private get ackWaitMs(): number {
    return this.options.ackWaitMs ?? 30_000;
  }

  private async start(): Promise<void> {
    await this.consume();
    // A held message is still being worked on: without this, one waiting in the queue for a
    // slow controller would go out again after the ack wait.
    this.heartbeat = setInterval(() => {
      for (const h of this.held.values()) this.respond(h.m, () => h.m.working());
    }, this.ackWaitMs / 3);
    this.heartbeat.unref();
  }

  /** Creates the durable if missing and pulls from it, in place of an earlier pull. */
  private async consume(): Promise<void> {
    await this.ensureConsumer();
    await this.messages?.close().catch((e: unknown) => this.log.warn('stopping the trigger consumer failed', { err: e }));
    const consumer = await this.js.consumers.get(this.stream, this.durable);
    const messages = await consumer.consume({ max_messages: MAX_HELD, callback: (m) => this.receive(m) });
    this.messages = messages;
    if (this.closing !== undefined) await messages.close();
    void (async () => {
      for await (const s of messages.status()) this.onStatus(s);
    })().catch((e: unknown) => this.log.warn('trigger consumer status stopped', { err: e }));
    void messages.closed().then((err) => {
      if (err instanceof Error && this.closing === undefined && this.messages === messages) this.log.error('trigger consumer stopped; no event trigger fires until the controller restarts', { err });
    });
  }

  private onStatus(s: ConsumerNotification): void {
    switch (s.type) {
      case 'consumer_deleted':
      case 'consumer_not_found':
      case 'stream_not_found':
        // Deleted by hand (or the server lost them): made again, and pulled from anew (the
        // old pull would wait out its expiry first).
        this.log.warn('trigger stream or consumer missing; recreating it', { status: s.type, durable: this.durable });
        this.repairing ??= (async () => {
          await this.applyStream(this.captured);
          await this.consume();
        })().then(
          () => this.log.info('trigger stream and consumer recreated', { durable: this.durable }),
          (e: unknown) => this.log.error('could not recreate the trigger stream or consumer', { durable: this.durable, err: e }),
        ).finally(() => { this.repairing = undefined; });
        return;
      case 'heartbeats_missed':
      case 'no_responders':
      case 'exceeded_limits':
        this.log.warn('trigger consumer is not receiving', { status: s.type, ...('count' in s ? { count: s.count } : {}) });
        return;
      default:
        return;
    }
  }

  private receive(m: JsMsg): void {
    if (this.closing !== undefined) return;
    const holding = this.held.get(m.seq);
    if (holding !== undefined) {
      // Sent again while its events wait (a heartbeat lost on a reconnect): the events are
      // out already; the answer goes to this delivery.
      holding.m = m;
      return;
    }
    const id = m.headers?.get('Nats-Msg-Id') || `seq:${m.seq}`;
    const fields = { subject: m.subject, id, seq: m.seq, deliveries: m.info.deliveryCount };
    const matched = this.routesFor(m.subject);
    if (matched.length === 0) {
      this.log.info('event trigger message matches no workflow; dropped', fields);
      this.respond(m, () => m.term());
      return;
    }
    // A redelivery after one workflow nak'ed: the others had their event already (and answered
    // it, so the message counts as acknowledged unless this one nak's again).
    const done = this.settledBefore.get(m.seq);
    const h: Held = { m, open: 0, settled: new Set(done), acked: done !== undefined, nakDelayMs: undefined };
    this.held.set(m.seq, h);
    const payload = readPayload(m.data);
    for (const r of matched) {
      if (h.settled.has(r.workflow)) continue;
      let params: Record<string, unknown> | undefined;
      let reason = payload.ok ? r.problem : payload.reason;
      if (reason === undefined && payload.ok) {
        try {
          params = { ...resolveFixed(r.params, { subject: m.subject, tokens: m.subject.split('.'), id, payload: payload.params }), ...payload.params };
        } catch (e) {
          reason = `the trigger's params: ${(e as Error).message}`;
        }
      }
      if (params === undefined) {
        this.refuse(r.workflow, fields, reason ?? 'unreadable');
        h.settled.add(r.workflow);
        continue;
      }
      h.open++;
      this.queue.push(this.event(h, r.workflow, id, params, fields));
    }
    if (h.open > 0) this.wake?.();
    else this.finish(h).catch((e: unknown) => this.log.warn('could not answer a refused trigger message', { ...fields, err: e }));
  }

  /** Each workflow once, with its first matching trigger's fixed params. */
  private routesFor(subject: string): Route[] {
    const out = new Map<string, Route>();
    for (const r of this.routes) if (!out.has(r.workflow) && subjectMatches(r.pattern, subject)) out.set(r.workflow, r);
    return [...out.values()];
  }

  private refuse(workflow: string, fields: MessageFields, reason: string): void {
    this.refusals++;
    // Never the payload: it may hold secrets.
    this.log.warn('event trigger message refused', { workflow, ...fields, reason });
    try {
      this.options.onRefused?.(workflow, fields.subject, reason);
    } catch (e) {
      this.log.error('onRefused failed', { workflow, err: e });
    }
  }

  private event(h: Held, workflow: string, id: string, params: Record<string, unknown>, fields: MessageFields): TriggerEvent {
    let settled = false;
    const settle = async (how: 'ack' | 'term' | 'nak', delayMs?: number): Promise<void> => {
      if (settled) return;
      settled = true;
      h.open--;
      if (how === 'nak') h.nakDelayMs = Math.max(h.nakDelayMs ?? 0, delayMs ?? 0);
      else h.settled.add(workflow);
      if (how === 'ack') h.acked = true;
      // The message is settled once every workflow it is for has settled; until then only
      // this one's answer is noted (a controller awaiting it would otherwise wait for the next).
      if (h.open === 0) await this.finish(h);
    };
    return {
      workflow, subject: fields.subject, id, params,
      ack: () => settle('ack'),
      term: (reason: string) => {
        if (!settled) this.log.warn('event trigger refused for good', { workflow, ...fields, reason });
        return settle('term');
      },
      nak: (delayMs?: number) => settle('nak', delayMs),
    };
  }

  /** Sends the message's one answer: nak if any workflow asked for it again, else ack, else term. */
  private async finish(h: Held): Promise<void> {
    this.held.delete(h.m.seq);
    if (this.closing !== undefined) throw new CaravanError('BUS_UNAVAILABLE', 'the event trigger source is closed; the message will be delivered again', { data: { seq: h.m.seq } });
    if (h.nakDelayMs !== undefined) {
      if (h.settled.size > 0) {
        this.settledBefore.set(h.m.seq, h.settled);
        forgetOldest(this.settledBefore, 10_000);
      }
      this.respond(h.m, () => h.m.nak(h.nakDelayMs || undefined));
    } else {
      this.settledBefore.delete(h.m.seq);
      if (h.acked) {
        try {
          await h.m.ackAck();
          return;
        } catch (e) {
          this.log.warn('trigger message acknowledgement not confirmed; it may be delivered again', { subject: h.m.subject, seq: h.m.seq, err: e });
          throw new CaravanError('BUS_UNAVAILABLE', `acknowledgement of trigger message ${h.m.seq} not confirmed: ${(e as Error).message}`, { cause: e });
        }
      }
      // Without a reason: servers before 2.11 ignore a `+TERM <reason>` and send the message again.
      this.respond(h.m, () => h.m.term());
    }
    // The server reads a connection in order: once the flush's pong is back, it has the answer.
    await this.nc.flush();
  }

  /** Sends an ack-protocol message; failing only when the connection is gone, when it goes out again anyway. */
  private respond(m: JsMsg, send: () => void): void {
    try {
      send();
    } catch (e) {
      this.log.warn('could not answer a trigger message; it will be delivered again', { subject: m.subject, seq: m.seq, err: e });
    }
  }
}

/** The event triggers of these workflows, in order, for open() and updateSubjects(). */
export function eventTriggerSubjects(workflows: Iterable<Workflow>): EventTriggerSubject[] {
  const out: EventTriggerSubject[] = [];
  for (const w of workflows) {
    for (const t of w.spec.triggers ?? []) {
      if (t.event !== undefined) out.push({ workflow: w.metadata.name, subject: t.event.subject, ...(t.event.params !== undefined ? { params: t.event.params } : {}) });
    }
  }
  return out;
}

function isConnection(c: EventTriggerSourceOptions['connection']): c is NatsConnection {
  return !Array.isArray(c) && typeof (c as Partial<NatsConnection>).publish === 'function';
}

type Payload = { ok: true; params: Record<string, unknown> } | { ok: false; reason: string };

/** The payload's params; reasons name what is wrong, never what the payload holds. */
function readPayload(bytes: Uint8Array): Payload {
  if (bytes.length > MAX_TRIGGER_PAYLOAD_BYTES) return { ok: false, reason: `payload of ${bytes.length} bytes is over the ${MAX_TRIGGER_PAYLOAD_BYTES}-byte limit` };
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    // The decoder's message says nothing more than this.
    return { ok: false, reason: 'payload is not UTF-8 text' };
  }
  // An empty message is a trigger with no params of its own (`nats pub orders.created ""`).
  if (text.trim() === '') return { ok: true, params: {} };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // JSON.parse's message quotes the payload, which may hold secrets.
    return { ok: false, reason: 'payload is not JSON' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, reason: `payload is ${Array.isArray(value) ? 'an array' : value === null ? 'null' : `a ${typeof value}`}, not a JSON object of params` };
  }
  return { ok: true, params: value as Record<string, unknown> };
}

/** What `${{ event.* }}` in a trigger's fixed params reads. */
interface EventContext {
  subject: string;
  tokens: string[];
  id: string;
  payload: Record<string, unknown>;
}

function parseEventExpression(source: string): ReturnType<Parser['parse']> {
  return new Parser(new Lexer(source).lex().tokens, ['event'], []).parse();
}

/** The first `${{ }}` in the fixed params that cannot be parsed, checked once per update. */
function fixedParamsProblem(value: unknown, path = ''): string | undefined {
  if (typeof value === 'string') {
    if (!value.includes('${{')) return undefined;
    const scan = findTemplates(value);
    if (!scan.ok) return `param ${path}: ${scan.message}`;
    for (const t of scan.templates) {
      try {
        parseEventExpression(t.source);
      } catch (e) {
        return `param ${path}: expression '${t.source.trim()}': ${(e as Error).message} (only event.subject, event.tokens, event.id and event.payload can be read)`;
      }
    }
    return undefined;
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const problem = fixedParamsProblem(v, path === '' ? k : `${path}.${k}`);
      if (problem !== undefined) return problem;
    }
  }
  return undefined;
}

/** The fixed params with every `${{ event.* }}` resolved; a value that is one expression keeps its type. */
function resolveFixed<T>(value: T, event: EventContext): T {
  if (typeof value === 'string') {
    if (!value.includes('${{')) return value;
    const dict = new data.Dictionary();
    dict.add('event', JSON.parse(JSON.stringify(event), data.reviver) as data.ExpressionData);
    const evaluate = (source: string): unknown => JSON.parse(JSON.stringify(new Evaluator(parseEventExpression(source), dict).evaluate(), data.replacer)) as unknown;
    const scan = findTemplates(value);
    if (!scan.ok) throw new Error(scan.message);
    const only = scan.templates[0];
    if (scan.templates.length === 1 && only !== undefined && value.trim() === `\${{${only.source}}}`) return evaluate(only.source) as T;
    let out = '';
    let last = 0;
    for (const t of scan.templates) {
      const v = evaluate(t.source);
      out += value.slice(last, t.start) + (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
      last = t.start + 3 + t.source.length + 2;
    }
    return (out + value.slice(last)) as T;
  }
  if (Array.isArray(value)) return value.map((v: unknown) => resolveFixed(v, event)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveFixed(v, event)])) as T;
  }
  return value;
}

/** Whether `subject` (no wildcards) matches `pattern` (`*` one token, a final `>` one or more). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

/** Whether some subject matches both patterns: JetStream refuses such pairs in or across streams. */
export function subjectsOverlap(a: string, b: string): boolean {
  const ta = a.split('.');
  const tb = b.split('.');
  for (let i = 0; ; i++) {
    const x = ta[i];
    const y = tb[i];
    if (x === undefined || y === undefined) return x === y;
    if (x === '>' || y === '>') return true;
    if (x !== '*' && y !== '*' && x !== y) return false;
  }
}

/** Whether every subject `specific` matches, `general` matches too. */
function covers(general: string, specific: string): boolean {
  const g = general.split('.');
  const s = specific.split('.');
  for (let i = 0; ; i++) {
    if (g[i] === '>') return s[i] !== undefined;
    if (g[i] === undefined || s[i] === undefined) return g[i] === s[i];
    if (s[i] === '>' || (g[i] !== '*' && g[i] !== s[i])) return false;
  }
}

/** The narrowest pattern covering two overlapping ones: differing tokens become `*`, a `>` stays. */
function widen(a: string, b: string): string {
  const ta = a.split('.');
  const tb = b.split('.');
  const out: string[] = [];
  for (let i = 0; ; i++) {
    const x = ta[i];
    const y = tb[i];
    if (x === undefined && y === undefined) return out.join('.');
    if (x === '>' || y === '>' || x === undefined || y === undefined) return [...out, '>'].join('.');
    out.push(x === y ? x : '*');
  }
}

/**
 * The stream's subjects for these trigger patterns. JetStream refuses overlapping subjects in
 * a stream, so a pattern another one covers adds nothing, and two that overlap are replaced
 * by one that covers both (`a.*.c` and `a.b.*` by `a.*.*`); messages the wider subject
 * catches for no trigger are dropped. A pattern whose subject would overlap `blocked` is refused.
 */
export function planCapture(patterns: readonly string[], blocked: ReadonlyArray<{ subject: string; owner: string }>): { captures: string[]; refused: Map<string, string> } {
  let captures: string[] = [];
  const refused = new Map<string, string>();
  for (const p of patterns) {
    if (captures.some((c) => covers(c, p))) continue;
    let merged = p;
    const absorbed = new Set<string>();
    for (let o = captures.find((c) => subjectsOverlap(c, merged)); o !== undefined; o = captures.find((c) => !absorbed.has(c) && subjectsOverlap(c, merged))) {
      absorbed.add(o);
      merged = widen(merged, o);
    }
    const clash = blocked.find((b) => subjectsOverlap(b.subject, merged));
    if (clash !== undefined) {
      refused.set(p, merged === p ? `overlaps ${clash.subject} (${clash.owner})` : `overlaps other triggers, and ${merged}, which would capture them all, overlaps ${clash.subject} (${clash.owner})`);
      continue;
    }
    captures = [...captures.filter((c) => !absorbed.has(c)), merged];
  }
  return { captures, refused };
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}
