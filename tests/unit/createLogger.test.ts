import { describe, expect, it } from 'vitest';
import { CaravanError } from '../../engine/errors/CaravanError.js';
import { MemoryLogger, noopLogger } from '../../engine/run/Logger.js';
import { createLogger, type CreateLoggerOptions } from '../../engine/telemetry/createLogger.js';

/** A logger writing into an array: the raw lines, and each parsed as JSON. */
function capture(options: CreateLoggerOptions = {}): { lines: string[]; json: () => Array<Record<string, unknown>>; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const log = createLogger({ env: {}, ...options, destination: { write: (line: string) => lines.push(line) } });
  return { lines, json: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>), log };
}

const SECRET = 'hunter2-s3cr3t';

describe('createLogger: JSON lines', () => {
  it('writes one JSON object per line with level, time, msg, and a child\'s workflow, run, task and attempt', () => {
    const { lines, json, log } = capture({ name: 'caravan-test' });
    const attempt = log.child({ workflow: 'etl', run: 'r-42' }).child({ task: 'load[3]', attempt: 2 });
    attempt.info('attempt started', { node: 'n1' });
    log.warn('no fields');
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    const [first, second] = json();
    expect(first).toMatchObject({ level: 'info', name: 'caravan-test', msg: 'attempt started', workflow: 'etl', run: 'r-42', task: 'load[3]', attempt: 2, node: 'n1' });
    expect(new Date(first!['time'] as string).toISOString()).toBe(first!['time']);
    expect(second).toMatchObject({ level: 'warn', msg: 'no fields' });
    expect(second).not.toHaveProperty('run');
  });

  it('writes a key bound twice with the same value once (a run\'s logger handed to the engine, which binds the run again)', () => {
    const { lines, json, log } = capture();
    log.child({ workflow: 'etl', run: 'r-1' }).child({ workflow: 'etl', run: 'r-1', task: 'a' }).info('x');
    log.child({ run: 'r-1' }).child({ run: 'r-2' }).info('y');
    expect(lines[0]!.match(/"run":/g)).toHaveLength(1);
    expect(lines[0]!.match(/"workflow":/g)).toHaveLength(1);
    expect(json()[0]).toMatchObject({ workflow: 'etl', run: 'r-1', task: 'a' });
    // A different value is a different binding: pino writes both, and the last one wins.
    expect(lines[1]!.match(/"run":/g)).toHaveLength(2);
    expect(json()[1]!['run']).toBe('r-2');
  });

  it('serializes err with its code, data and cause chain', () => {
    const { json, log } = capture();
    const root = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4646'), { code: 'ECONNREFUSED' });
    const err = new CaravanError('NOMAD_UNREACHABLE', 'Nomad did not answer', { data: { address: 'http://127.0.0.1:4646' }, cause: new CaravanError('NOMAD_API', 'stopJob failed', { cause: root }) });
    log.error('cancel could not stop the job', { err });
    const line = json()[0]!;
    expect(line['err']).toMatchObject({
      type: 'CaravanError',
      message: 'Nomad did not answer',
      code: 'NOMAD_UNREACHABLE',
      data: { address: 'http://127.0.0.1:4646' },
      cause: { type: 'CaravanError', code: 'NOMAD_API', message: 'stopJob failed', cause: { type: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:4646' } },
    });
    expect((line['err'] as { stack: string }).stack).toContain('Nomad did not answer');
    // A thrown value that is not an Error keeps its text.
    log.error('odd throw', { err: 'just a string' });
    expect(json()[1]!['err']).toEqual({ type: 'string', message: 'just a string' });
  });
});

describe('createLogger: secrets', () => {
  it('masks a secret value in the message, a field, an error and a child\'s bindings: none reaches the output', () => {
    const { lines, json, log } = capture();
    // The bindings are made before the logger learns the secret: masking works on the finished line.
    const child = log.child({ workflow: 'etl', run: 'r-1', param: `--password=${SECRET}` }).withSecrets([SECRET]);
    child.info(`running curl -u admin:${SECRET}`, { args: ['x', { deep: `a ${SECRET} b` }] });
    child.error('attempt failed', { err: new CaravanError('INTERNAL', `exit 1: bad ${SECRET}`, { cause: new Error(`inner ${SECRET}`) }) });
    child.child({ task: 'fetch', token2: SECRET }).warn('child of a masked logger');
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l).not.toContain(SECRET);
    const [a, b, c] = json();
    expect(a).toMatchObject({ msg: 'running curl -u admin:***', param: '--password=***', args: ['x', { deep: 'a *** b' }] });
    expect(b!['err']).toMatchObject({ message: 'exit 1: bad ***', cause: { message: 'inner ***' } });
    expect((b!['err'] as { stack: string }).stack).toContain('exit 1: bad ***');
    expect(c).toMatchObject({ task: 'fetch', token2: '***', param: '--password=***' });
    // The parent, which was never told the secret, is not masked: secrets belong to a run's logger.
    log.info(`parent ${SECRET}`);
    expect(lines[3]).toContain(SECRET);
  });

  it('masks a secret that JSON escapes, and keeps every line valid JSON', () => {
    const { lines, json, log } = capture({ secrets: ['pa"ss\\word', '123'] });
    log.info('login with pa"ss\\word', { attempt: 123, note: 'code 123', body: JSON.stringify({ password2: 'pa"ss\\word' }) });
    expect(lines[0]).not.toContain('ss\\\\word');
    const line = json()[0]!;
    expect(line).toMatchObject({ msg: 'login with ***', attempt: 123, note: 'code ***' });
    // The secret inside a JSON text inside a field is escaped twice, and found all the same.
    expect(line['body']).toBe('{"password2":"***"}');
  });

  it('leaves values shorter than three characters alone, as the agents do', () => {
    const { json, log } = capture({ secrets: ['ab'] });
    log.info('ab cd');
    expect(json()[0]!['msg']).toBe('ab cd');
  });

  it('redacts secret-bearing field names even without knowing the value', () => {
    const { lines, json, log } = capture();
    log.child({ nats: { servers: 'nats://n1', pass: 'natspass' } }).info('connecting', {
      token: 'nomad-acl-token',
      headers: { authorization: 'Bearer abc.def', 'x-nomad-token': 'xnt-1', accept: 'application/json' },
      request: { headers: { 'x-consul-token': 'xct-1' } },
      err: new CaravanError('CONSUL_UNREACHABLE', 'no answer', { data: { token: 'data-token', address: 'c1' } }),
    });
    for (const s of ['natspass', 'nomad-acl-token', 'abc.def', 'xnt-1', 'xct-1', 'data-token']) expect(lines[0]).not.toContain(s);
    expect(json()[0]).toMatchObject({
      nats: { servers: 'nats://n1', pass: '***' },
      token: '***',
      headers: { authorization: '***', 'x-nomad-token': '***', accept: 'application/json' },
      request: { headers: { 'x-consul-token': '***' } },
      err: { data: { token: '***', address: 'c1' } },
    });
  });
});

describe('createLogger: levels and formats', () => {
  it('takes its threshold from CARAVAN_LOG_LEVEL, info by default', () => {
    const dflt = capture();
    dflt.log.debug('hidden');
    dflt.log.info('shown');
    expect(dflt.json().map((l) => l['msg'])).toEqual(['shown']);
    const warn = capture({ env: { CARAVAN_LOG_LEVEL: 'warn' } });
    warn.log.info('hidden');
    warn.log.child({ run: 'r' }).error('shown');
    expect(warn.json().map((l) => [l['level'], l['msg']])).toEqual([['error', 'shown']]);
    const debug = capture({ env: { CARAVAN_LOG_LEVEL: 'DEBUG' } });
    debug.log.debug('shown');
    expect(debug.json()[0]).toMatchObject({ level: 'debug', msg: 'shown' });
    // An explicit option wins over the environment.
    const silent = capture({ env: { CARAVAN_LOG_LEVEL: 'debug' }, level: 'silent' });
    silent.log.error('hidden');
    expect(silent.lines).toEqual([]);
  });

  it('rejects an unknown level or format with a USAGE error', () => {
    expect(() => createLogger({ env: { CARAVAN_LOG_LEVEL: 'loud' } })).toThrow(expect.objectContaining({ code: 'USAGE', message: 'CARAVAN_LOG_LEVEL=loud is not one of trace, debug, info, warn, error, fatal, silent' }));
    expect(() => createLogger({ env: { CARAVAN_LOG_FORMAT: 'xml' } })).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });

  it('CARAVAN_LOG_FORMAT=pretty writes pino-pretty text, still masked', () => {
    const { lines, log } = capture({ env: { CARAVAN_LOG_FORMAT: 'pretty' } });
    log.child({ run: 'r-9' }).withSecrets([SECRET]).warn(`retrying with ${SECRET}`, { task: 'a' });
    const text = lines.join('');
    expect(() => JSON.parse(lines[0]!)).toThrow();
    expect(text).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: retrying with \*\*\*\n/);
    expect(text).toContain('run: "r-9"');
    expect(text).toContain('task: "a"');
    expect(text).not.toContain(SECRET);
  });
});

describe('the port\'s own loggers', () => {
  it('MemoryLogger keeps lines with their child bindings and masks secrets; noopLogger keeps nothing', () => {
    const mem = new MemoryLogger();
    mem.child({ workflow: 'w', run: 'r' }).withSecrets([SECRET]).child({ task: 't', attempt: 1 }).warn(`x ${SECRET}`, { error: `y ${SECRET}` });
    mem.info('plain');
    expect(mem.entries).toEqual([
      { level: 'warn', msg: 'x ***', fields: { workflow: 'w', run: 'r', task: 't', attempt: 1, error: 'y ***' } },
      { level: 'info', msg: 'plain', fields: {} },
    ]);
    expect(mem.lines('warn')).toHaveLength(1);
    expect(noopLogger.child({ run: 'r' }).withSecrets(['abc'])).toBe(noopLogger);
  });
});
