import { createHash, timingSafeEqual } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { CaravanError } from '../errors/CaravanError.js';
import { readBoundedFile } from '../spec/readBoundedFile.js';

/** viewer: reads; operator: reads, run, pause, unpause, cancel; approver: reads, approve, reject. */
export type ApiRole = 'viewer' | 'operator' | 'approver';

export const API_ROLES: readonly ApiRole[] = ['viewer', 'operator', 'approver'];

/** Who is calling: the token's name is the identity recorded in the audit. */
export interface ApiCaller {
  name: string;
  roles: ReadonlySet<ApiRole>;
}

/** One token as configured; the secret itself is only kept as its SHA-256. */
export interface TokenEntry {
  name: string;
  token: string;
  roles: readonly ApiRole[];
}

/** The environment variable holding one token, and the one naming it. */
export const TOKEN_ENV = 'CARAVAN_API_TOKEN';
export const TOKEN_NAME_ENV = 'CARAVAN_API_TOKEN_NAME';

// An identity in run events and audit commits: no spaces, no control characters, no markup.
const NAME_FORM = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/;
const MIN_TOKEN_LENGTH = 16;
const MAX_TOKEN_LENGTH = 4096;
const MAX_TOKENS_FILE_BYTES = 1024 * 1024;
const MAX_TOKEN_FILE_BYTES = 8 * 1024;

/**
 * The API's bearer tokens. A presented token is hashed and compared with every configured
 * hash by crypto.timingSafeEqual, without stopping at a match: how long the check takes says
 * nothing about which token, or how much of one, was right.
 */
export class ApiTokens {
  private readonly entries: ReadonlyArray<{ caller: ApiCaller; hash: Buffer }>;
  private readonly values: readonly string[];

  constructor(entries: readonly TokenEntry[]) {
    const names = new Set<string>();
    const hashes = new Set<string>();
    for (const e of entries) {
      if (!NAME_FORM.test(e.name)) throw new CaravanError('USAGE', `API token name '${e.name}' must be 1-64 letters, digits, '.', '_', '@', '+' or '-'`, { data: { name: e.name } });
      if (names.has(e.name)) throw new CaravanError('USAGE', `API token name '${e.name}' is given twice`, { data: { name: e.name } });
      const h = digest(e.token).toString('hex');
      if (hashes.has(h)) throw new CaravanError('USAGE', `API token '${e.name}' has the same secret as another token: each caller needs its own`, { data: { name: e.name } });
      names.add(e.name);
      hashes.add(h);
    }
    this.entries = entries.map((e) => ({ caller: { name: e.name, roles: new Set(e.roles) }, hash: digest(e.token) }));
    this.values = entries.map((e) => e.token);
  }

  /** Tokens from `--tokens-file` and from CARAVAN_API_TOKEN, together. */
  static async load(file: string | undefined, env: Readonly<Record<string, string | undefined>> = process.env): Promise<ApiTokens> {
    const entries = file !== undefined ? await readTokensFile(file) : [];
    const fromEnv = env[TOKEN_ENV];
    if (fromEnv !== undefined && fromEnv !== '') {
      checkTokenValue(fromEnv, TOKEN_ENV);
      // One token for a single operator's setup: it may do everything, under the name given.
      entries.push({ name: env[TOKEN_NAME_ENV] ?? 'admin', token: fromEnv, roles: ['operator', 'approver'] });
    }
    return new ApiTokens(entries);
  }

  get size(): number {
    return this.entries.length;
  }

  /** The caller a presented token belongs to; undefined for an unknown token. */
  authenticate(presented: string): ApiCaller | undefined {
    const h = digest(presented);
    let found: ApiCaller | undefined;
    for (const e of this.entries) if (timingSafeEqual(h, e.hash) && found === undefined) found = e.caller;
    return found;
  }

  /** The secret values, for a logger to mask wherever they might appear. */
  secrets(): readonly string[] {
    return this.values;
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function checkTokenValue(token: string, where: string): void {
  if (token.length < MIN_TOKEN_LENGTH || token.length > MAX_TOKEN_LENGTH) throw new CaravanError('USAGE', `${where}: a token must be ${MIN_TOKEN_LENGTH} to ${MAX_TOKEN_LENGTH} characters (try: openssl rand -hex 32)`, { data: { where } });
  // A header value cannot carry these; a token holding them could never be presented.
  if (!/^[\x21-\x7e]+$/.test(token)) throw new CaravanError('USAGE', `${where}: a token must be printable ASCII without spaces`, { data: { where } });
}

/**
 * Reads a tokens file: a YAML list of `{name, token | tokenFile, role}`, `role` one role or a
 * list. Every problem names the file, the line and the field; no message quotes a token.
 */
export async function readTokensFile(file: string): Promise<TokenEntry[]> {
  const text = await readText(file, MAX_TOKENS_FILE_BYTES, 'tokens file');
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true });
  const at = (node: Node | null | undefined): string => {
    const offset = node?.range?.[0];
    return `${file}:${offset !== undefined ? lines.linePos(offset).line : 1}`;
  };
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw new CaravanError('USAGE', `${file}:${e.linePos?.[0].line ?? 1}: not valid YAML: ${e.message.split('\n')[0]}`, { data: { file } });
  }
  const list = doc.contents;
  if (!isSeq(list)) throw new CaravanError('USAGE', `${at(list)}: the tokens file must be a YAML list of {name, token or tokenFile, role}`, { data: { file } });
  const out: TokenEntry[] = [];
  for (const item of list.items) {
    if (!isMap(item)) throw new CaravanError('USAGE', `${at(item as Node)}: each entry must be a mapping {name, token or tokenFile, role}`, { data: { file } });
    const field = (key: string): { value: unknown; node: Node | null } => {
      const pair = item.items.find((p) => isScalar(p.key) && p.key.value === key);
      return { value: pair !== undefined ? (pair.value as Node | null)?.toJSON() : undefined, node: (pair?.value as Node | null) ?? null };
    };
    for (const p of item.items) {
      const key = isScalar(p.key) ? p.key.value : undefined;
      if (key !== 'name' && key !== 'token' && key !== 'tokenFile' && key !== 'role') throw new CaravanError('USAGE', `${at(p.key as Node)}: unknown field '${String(key)}' (fields: name, token, tokenFile, role)`, { data: { file } });
    }
    const name = field('name');
    if (typeof name.value !== 'string' || !NAME_FORM.test(name.value)) throw new CaravanError('USAGE', `${at(name.node ?? item)}: field name must be 1-64 letters, digits, '.', '_', '@', '+' or '-'`, { data: { file, field: 'name' } });
    const token = field('token');
    const tokenFile = field('tokenFile');
    if ((token.value === undefined) === (tokenFile.value === undefined)) throw new CaravanError('USAGE', `${at(item)}: token '${name.value}' needs exactly one of the fields token and tokenFile`, { data: { file, field: 'token' } });
    let secret: string;
    if (token.value !== undefined) {
      if (typeof token.value !== 'string') throw new CaravanError('USAGE', `${at(token.node)}: field token of '${name.value}' must be a string`, { data: { file, field: 'token' } });
      secret = token.value;
    } else {
      if (typeof tokenFile.value !== 'string' || tokenFile.value === '') throw new CaravanError('USAGE', `${at(tokenFile.node)}: field tokenFile of '${name.value}' must be a path`, { data: { file, field: 'tokenFile' } });
      secret = (await readText(resolve(dirname(file), tokenFile.value), MAX_TOKEN_FILE_BYTES, `token file of '${name.value}'`)).replace(/\r?\n$/, '');
    }
    checkTokenValue(secret, `${at(token.node ?? tokenFile.node)}: token of '${name.value}'`);
    const role = field('role');
    const roles = typeof role.value === 'string' ? [role.value] : role.value;
    if (!Array.isArray(roles) || roles.length === 0 || roles.some((r) => !API_ROLES.includes(r as ApiRole))) {
      throw new CaravanError('USAGE', `${at(role.node ?? item)}: field role of '${name.value}' must be one of ${API_ROLES.join(', ')} or a list of them`, { data: { file, field: 'role' } });
    }
    out.push({ name: name.value, token: secret, roles: roles as ApiRole[] });
  }
  return out;
}

async function readText(path: string, limit: number, what: string): Promise<string> {
  let read;
  try {
    read = await readBoundedFile(path, limit);
  } catch (e) {
    throw new CaravanError('PATH_NOT_FOUND', `cannot read the ${what} ${path}: ${(e as Error).message}`, { cause: e, data: { file: path } });
  }
  if (!read.ok) throw new CaravanError('USAGE', `the ${what} ${path} is not read: ${read.refusal.message}`, { data: { file: path } });
  return read.bytes.toString('utf8');
}
