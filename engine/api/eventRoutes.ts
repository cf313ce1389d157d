import type { FastifyInstance, FastifyReply } from 'fastify';
import type { RunTimeline } from '../app/RunTimeline.js';
import { isCaravanError } from '../errors/CaravanError.js';
import { ApiError } from './ApiError.js';
import { apiSchema, responses } from './apiSchemas.js';
import type { RouteContext } from './RouteContext.js';
import { RUN_ID } from './runRoutes.js';
import { formatEvent, SseStream, type SseLimits } from './SseStream.js';
import { WORKFLOW_NAME } from './workflowRoutes.js';

/** Limits of the live-event routes; every field has a default. */
export interface EventStreamOptions extends SseLimits {
  /** Event streams open at once in this process; past it, 503. */
  maxSubscribers: number;
}

export const EVENT_STREAM_DEFAULTS: EventStreamOptions = { heartbeatMs: 15_000, maxSubscribers: 1_000, maxBufferedBytes: 1024 * 1024, stallMs: 30_000 };

/** A Last-Event-ID is a non-negative integer: a stream sequence or a journal index. */
const EVENT_ID = /^[0-9]{1,15}$/;
/** Events written to the socket at once while a subscriber catches up, and about how much text. */
const CHUNK = 256;
const CHUNK_CHARS = 64 * 1024;

/** Error responses of the event routes: their 503 is the subscriber limit, not a follower's refusal. */
const errorResponses = (statuses: readonly number[]): Record<number, Record<string, unknown>> => ({
  ...responses({}, statuses),
  503: { ...apiSchema('Error'), description: 'too many event streams are open on this controller (TOO_MANY_SUBSCRIBERS, details.maxSubscribers)' },
});

const eventStream = (what: string): Record<string, unknown> => ({
  description: `text/event-stream: ${what}`,
  content: { 'text/event-stream': { schema: apiSchema('RunEventMessage') } },
});

/**
 * Server-Sent Events: one run's events (replayed, then live, ending with the run) and every
 * run's. Each stream holds a place in the subscriber limit until it closes; a client that
 * stops reading is dropped rather than buffered for (SseStream).
 */
export async function eventRoutes(api: FastifyInstance, ctx: RouteContext, options: Partial<EventStreamOptions> = {}): Promise<void> {
  const limits: EventStreamOptions = { ...EVENT_STREAM_DEFAULTS, ...options };
  const feed = ctx.backend.events;
  const open = new Set<SseStream>();
  let subscribers = 0;

  // Streams never end by themselves (every run's) or only with their run: closing the server ends them.
  api.addHook('preClose', async () => {
    for (const s of open) s.end();
  });

  const admit = (): void => {
    if (subscribers >= limits.maxSubscribers) throw new ApiError(503, 'TOO_MANY_SUBSCRIBERS', `this controller serves at most ${limits.maxSubscribers} event streams at once; retry later`, { maxSubscribers: limits.maxSubscribers });
  };
  const lastEventId = (header: string | string[] | undefined): number | undefined => {
    if (header === undefined) return undefined;
    if (typeof header !== 'string' || !EVENT_ID.test(header.trim())) throw new ApiError(400, 'BAD_REQUEST', 'headers.last-event-id: must be the id of an event this API sent (a non-negative integer)', { field: 'headers.last-event-id' });
    return Number(header.trim());
  };
  const begin = (reply: FastifyReply): SseStream => {
    void reply.hijack();
    const sse = new SseStream(reply.raw, limits);
    open.add(sse);
    subscribers++;
    sse.start();
    return sse;
  };
  const finish = (sse: SseStream, fields: Record<string, unknown>): void => {
    open.delete(sse);
    subscribers--;
    if (sse.dropped !== undefined) ctx.log.warn('event subscriber dropped', { ...fields, reason: sse.dropped });
  };

  api.get<{ Params: { id: string } }>('/runs/:id/events', {
    config: { need: 'read' },
    schema: {
      summary: 'A run\'s events as Server-Sent Events: those so far (after Last-Event-ID), then live; ends with `event: end` when the run ends', tags: ['events'],
      params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: RUN_ID } } },
      headers: { type: 'object', properties: { 'last-event-id': { type: 'string', description: 'Resume after this event id (stream sequence on NATS, journal index in memory).' } } },
      response: { ...errorResponses([400, 401, 404, 429]), 200: eventStream('one `id`/`event`/`data` message per run event, then `event: end`') },
    },
  }, async (request, reply) => {
    const after = lastEventId(request.headers['last-event-id']);
    admit();
    const { id } = request.params;
    // Before the response starts: an unknown run is a 404 with the error body.
    const sub = await feed.openRun(id);
    const sse = begin(reply);
    const fields = { run: id, caller: request.caller?.name };
    try {
      await streamRun(sse, sub.timeline, after ?? 0);
    } finally {
      sub.release();
      finish(sse, fields);
    }
  });

  api.get<{ Querystring: { workflow?: string } }>('/events', {
    config: { need: 'read' },
    schema: {
      summary: 'Every run\'s events (of one workflow) as Server-Sent Events, as they come; never ends', tags: ['events'],
      querystring: { type: 'object', additionalProperties: false, properties: { workflow: { type: 'string', pattern: WORKFLOW_NAME } } },
      headers: { type: 'object', properties: { 'last-event-id': { type: 'string', description: 'Resume after this stream sequence (NATS bus only).' } } },
      response: { ...errorResponses([400, 401, 429]), 200: eventStream('one message per run event; ids on the NATS bus only') },
    },
  }, async (request, reply) => {
    const after = lastEventId(request.headers['last-event-id']);
    if (after !== undefined && (await feed.ids()) === 'journal') throw new ApiError(400, 'BAD_REQUEST', 'headers.last-event-id: every run\'s events carry no ids on the in-memory bus, so there is nothing to resume from (run the controller with --bus nats)', { field: 'headers.last-event-id' });
    admit();
    const workflow = request.query.workflow;
    const sse = begin(reply);
    const fields = { workflow, caller: request.caller?.name };
    try {
      for await (const batch of feed.all({ ...(workflow !== undefined ? { workflow } : {}), ...(after !== undefined ? { after } : {}) }, sse.signal)) {
        if (!(await sse.send(batch.map((e) => formatEvent(e.id, e.event.type, e.event)).join('')))) break;
      }
    } catch (e) {
      const reason = isCaravanError(e) && e.code === 'SUBSCRIBER_TOO_SLOW' ? e.message : 'reading the events failed';
      if (reason === 'reading the events failed') ctx.log.error('event stream failed', { ...fields, err: e });
      ctx.log.warn('event subscriber dropped', { ...fields, reason });
      reply.raw.destroy();
    } finally {
      sse.end();
      finish(sse, fields);
    }
  });
}

/** Writes a run's timeline from after `after` until the run ends or the client goes. */
async function streamRun(sse: SseStream, timeline: RunTimeline, after: number): Promise<void> {
  const closed = new Promise<void>((resolve) => sse.signal.addEventListener('abort', () => resolve(), { once: true }));
  let i = 0;
  while (!sse.signal.aborted) {
    const events = timeline.events;
    // Asked again each time: a timeline still being read may not hold `after` yet.
    i = Math.max(i, timeline.indexAfter(after));
    if (i < events.length) {
      const upTo = Math.min(events.length, i + CHUNK);
      let text = '';
      for (; i < upTo && text.length < CHUNK_CHARS; i++) text += formatEvent(events[i]!.id, events[i]!.event.type, events[i]!.event);
      if (!(await sse.send(text))) return;
      continue;
    }
    const end = timeline.ended;
    if (end !== undefined) {
      if (await sse.send(formatEvent(undefined, 'end', { runId: timeline.runId, ...end }))) sse.end();
      return;
    }
    await Promise.race([timeline.changed(), closed]);
  }
}
